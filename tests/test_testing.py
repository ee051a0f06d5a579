"""Tests of the student-facing checkers in emtutor.testing: they pass on good input and
fail on bad input with a message that says where and by how much."""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from scipy.stats import binom

from emtutor import bounds, coins, testing

pytestmark = pytest.mark.filterwarnings("error")

LJ = np.log([[0.1, 0.3], [0.2, 0.2], [0.05, 0.15]])


# ---------------------------------------------------------------- assert_monotone
def test_assert_monotone_passes():
    testing.assert_monotone([-10.0, -9.0, -9.0, -8.5])
    testing.assert_monotone([3.0])
    testing.assert_monotone([-1e6, -1e6 - 5e-5])  # within 1e-10 relative
    res = coins.fit(*coins.from_strings(["HTTH", "HHHT", "TTTH"]),
                    coins.Params(np.array([0.3, 0.6]), np.array([0.5, 0.5])))
    testing.assert_monotone(res.log_likelihood)


def test_assert_monotone_names_iteration_and_drop():
    with pytest.raises(
        AssertionError,
        match=r"decrease at iteration 3: from -8 to -8.25, a drop of 0.25 "
        r"\(relative 0.0303, allowed 1e-10\)",
    ):
        testing.assert_monotone([-10.0, -9.0, -8.0, -8.25, -7.0, -7.5])


def test_assert_monotone_tolerance_scales():
    with pytest.raises(AssertionError, match="iteration 1"):
        testing.assert_monotone([-1e6, -1e6 - 5e-5], rtol=1e-12)
    with pytest.raises(AssertionError, match="a drop of 2e-10"):
        testing.assert_monotone([0.5, 0.5 - 2e-10])


@pytest.mark.parametrize(
    ("values", "kwargs", "exc", "match"),
    [
        ([1.0, np.nan], {}, ValueError, "values contains NaN"),
        ([[1.0, 2.0]], {}, ValueError, "values must be 1-D"),
        ([1.0, -np.inf], {}, ValueError, "values contains infinite"),
        ([1.0, 2.0], {"rtol": -1.0}, ValueError, "rtol must be a finite number >= 0, got -1.0"),
        ([1.0, 2.0], {"rtol": "small"}, TypeError, "rtol must be a real number, got str"),
    ],
)
def test_assert_monotone_bad_input(values, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        testing.assert_monotone(values, **kwargs)


# ---------------------------------------------------------------- check_decomposition
def test_check_decomposition_passes_and_returns_terms():
    q = np.array([[0.5, 0.5], [0.9, 0.1], [0.25, 0.75]])
    d = testing.check_decomposition(LJ, q)
    assert d == bounds.decompose(LJ, q)
    assert d.kl > 0
    d_post = testing.check_decomposition(LJ, bounds.posterior(LJ))
    assert d_post.kl == pytest.approx(0.0, abs=1e-15)


def test_check_decomposition_infinite_case():
    lj = np.array([[-np.inf, 0.0], [-1.0, -2.0]])
    d = testing.check_decomposition(lj, [[0.5, 0.5], [0.5, 0.5]])
    assert d.elbo == -np.inf and d.kl == np.inf


@pytest.mark.parametrize(
    ("fake", "match"),
    [
        (bounds.Decomposition(-2.0, -2.5, -0.1),
         r"KL divergence is negative: KL = -0.1"),
        (bounds.Decomposition(-2.0, -1.5, 0.0),
         r"ELBO exceeds the log-likelihood: L = -1.5 > ln p = -2 by 0.5"),
        (bounds.Decomposition(-2.0, -2.5, 0.25),
         r"ln p != L \+ KL: ln p = -2, L \+ KL = -2.25 .* difference 0.25"),
        (bounds.Decomposition(-2.0, -np.inf, 1.0),
         r"L should be -inf and KL \+inf; got L = -inf and KL = 1.0"),
    ],
)
def test_check_decomposition_reports_broken_terms(monkeypatch, fake, match):
    """A wrong term (here injected into decompose) is reported with both sides."""
    monkeypatch.setattr(bounds, "decompose", lambda lj, q: fake)
    with pytest.raises(AssertionError, match=match):
        testing.check_decomposition(LJ, bounds.posterior(LJ))


@pytest.mark.parametrize(
    ("q", "kwargs", "match"),
    [
        ([[0.5, 0.4], [0.5, 0.5], [0.5, 0.5]], {}, "row 0 sums to 0.9"),
        ([[0.5, 0.5]], {}, "log_joint and q must have the same shape"),
        ([[0.5, 0.5]] * 3, {"rtol": np.inf}, "rtol must be a finite number >= 0, got inf"),
    ],
)
def test_check_decomposition_bad_input(q, kwargs, match):
    with pytest.raises(ValueError, match=match):
        testing.check_decomposition(LJ, q, **kwargs)


# ---------------------------------------------------------------- check_gradient
def logistic_loglik(w, x, y):
    z = x @ w
    return float(np.sum(y * np.log(expit(z)) + (1 - y) * np.log(expit(-z))))


def test_check_gradient_passes_on_logistic_regression():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    y = (rng.random(20) < 0.5).astype(float)
    w = rng.normal(size=3)
    err = testing.check_gradient(
        lambda v: logistic_loglik(v, x, y), lambda v: x.T @ (y - expit(x @ v)), w
    )
    assert 0 <= err < 1e-7


def test_check_gradient_matrix_and_scalar_arguments():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    err = testing.check_gradient(lambda m: float(np.sum(a * m**2)), lambda m: 2 * a * m,
                                 np.ones((2, 2)))
    assert err < 1e-8
    assert testing.check_gradient(np.sin, np.cos, 0.3) < 1e-8
    bad = 2 * a * np.ones((2, 2))
    bad[1, 0] += 0.5
    with pytest.raises(AssertionError, match=r"coordinate \(1, 0\): analytic 2.5, numeric 2,"):
        testing.check_gradient(lambda m: float(np.sum(a * m**2)), lambda m: bad,
                               np.ones((2, 2)))


def test_check_gradient_names_worst_coordinate():
    def f(w):
        return float(w[0] ** 2 + 10 * w[1] + np.exp(w[2]))

    def wrong(w):
        return np.array([2 * w[0], 10.0, 1.001 * np.exp(w[2])])  # coordinate 2 off by 0.1 %

    w = np.array([1.0, 2.0, 3.0])
    with pytest.raises(
        AssertionError,
        match=r"gradient mismatch at coordinate \(2,\): analytic 20.1\d+, numeric 20.08\d+, "
        r"relative error 0.000999 > 1e-06",
    ):
        testing.check_gradient(f, wrong, w)
    # a looser tolerance accepts it and reports the size of the error
    assert testing.check_gradient(f, wrong, w, rtol=1e-2) == pytest.approx(1e-3 / 1.001,
                                                                          rel=1e-4)


@pytest.mark.parametrize(
    ("f", "grad", "x", "kwargs", "exc", "match"),
    [
        (np.sum, lambda x: np.ones(3), np.ones(2), {}, ValueError,
         r"x and grad\(x\) must have the same shape, got \(2,\) and \(3,\)"),
        (lambda x: np.nan, np.ones_like, np.ones(2), {}, ValueError,
         "f is nan at x \\+ eps e_0"),
        (lambda x: "a", np.ones_like, np.ones(2), {}, TypeError, "f must return a real number"),
        (np.sum, np.ones_like, [1.0, np.nan], {}, ValueError, "x contains NaN"),
        (np.sum, lambda x: np.full(2, np.inf), np.ones(2), {}, ValueError,
         r"grad\(x\) contains infinite"),
        (np.sum, np.ones_like, np.ones(2), {"eps": 0.0}, ValueError,
         "eps must be a positive finite number"),
        (np.sum, np.ones_like, np.ones(2), {"rtol": -1}, ValueError,
         "rtol must be a finite number >= 0, got -1.0"),
        ("f", np.ones_like, np.ones(2), {}, TypeError, "f must be callable"),
        (np.sum, None, np.ones(2), {}, TypeError, "grad must be callable"),
    ],
)
def test_check_gradient_bad_input(f, grad, x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        testing.check_gradient(f, grad, x, **kwargs)


# ---------------------------------------------------------------- check_posterior
def test_check_posterior_passes_on_exact_e_step():
    heads, n = coins.from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "THHHTHHHTH"])
    p = coins.Params(np.array([0.6, 0.5]), np.array([0.3, 0.7]))
    diff = testing.check_posterior(coins.e_step(heads, n, p), coins.log_joint(heads, n, p))
    assert 0 <= diff < 1e-15
    assert testing.check_posterior([0.25, 0.75], np.log([0.1, 0.3])) < 1e-15


def test_check_posterior_catches_e_step_without_prior():
    """A typical bug: responsibilities computed from the likelihood only, forgetting weights."""
    heads, n = coins.from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "THHHTHHHTH"])
    p = coins.Params(np.array([0.6, 0.5]), np.array([0.3, 0.7]))
    lj = coins.log_joint(heads, n, p)
    buggy = bounds.posterior(lj - np.log(p.weights))
    with pytest.raises(
        AssertionError, match=r"q differs from the posterior at row \d, column \d: .*difference 0.2"
    ):
        testing.check_posterior(buggy, lj)


def test_check_posterior_messages():
    post = bounds.posterior(LJ)
    q = post.copy()
    q[2] = [0.3, 0.7]  # posterior row 2 is [0.25, 0.75]
    with pytest.raises(
        AssertionError,
        match=r"row 2, column 0: q = 0.3, posterior = 0.25, difference 0.05 \(allowed 1e-10\)",
    ):
        testing.check_posterior(q, LJ)
    assert testing.check_posterior(q, LJ, atol=0.06) == pytest.approx(0.05, rel=1e-12)
    unnormalised = post.copy()
    unnormalised[1] *= 2
    with pytest.raises(AssertionError, match=r"row 1 of q sums to 2, not 1 \(off by 1\)"):
        testing.check_posterior(unnormalised, LJ)
    negative = post.copy()
    negative[0] = [1.25, -0.25]
    with pytest.raises(AssertionError, match="q has a negative entry at row 0, column 1: -0.25"):
        testing.check_posterior(negative, LJ)


@pytest.mark.parametrize(
    ("q", "lj", "kwargs", "exc", "match"),
    [
        ([[0.5, 0.5]], LJ, {}, ValueError, r"same shape, got \(3, 2\) and \(1, 2\)"),
        ([[0.5, np.nan]] * 3, LJ, {}, ValueError, "q contains NaN"),
        ([[0.5, 0.5]], [[-np.inf, -np.inf]], {}, ValueError, "data point 0 is impossible"),
        (np.full((3, 2, 1), 0.5), LJ, {}, ValueError, "q must be 1-D or 2-D"),
        ([[0.5, 0.5]] * 3, LJ, {"atol": -1.0}, ValueError,
         "atol must be a finite number >= 0, got -1.0"),
    ],
)
def test_check_posterior_bad_input(q, lj, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        testing.check_posterior(q, lj, **kwargs)


# ---------------------------------------------------------------- argument checks, all checkers
Q = bounds.posterior(LJ)
CHECKERS = {  # name -> call(**kwargs) on inputs that pass
    "assert_monotone": lambda **kw: testing.assert_monotone([-3.0, -2.0, -1.0], **kw),
    "check_decomposition": lambda **kw: testing.check_decomposition(LJ, Q, **kw),
    "check_gradient": lambda **kw: testing.check_gradient(
        lambda x: float(np.sum(x**2)), lambda x: 2 * x, [0.3, 0.4], **kw
    ),
    "check_posterior": lambda **kw: testing.check_posterior(Q, LJ, **kw),
}
TOLERANCES = [("assert_monotone", "rtol"), ("check_decomposition", "rtol"),
              ("check_gradient", "rtol"), ("check_gradient", "eps"),
              ("check_posterior", "atol")]
NOT_REALS = st.one_of(
    st.booleans(), st.text(max_size=4), st.none(), st.complex_numbers(),
    st.just([1e-6]), st.just(np.array([1e-6])), st.just(np.bool_(True)),
)
OUT_OF_RANGE = st.one_of(
    st.just(np.nan), st.just(np.inf), st.just(-np.inf),
    st.floats(max_value=-1e-300, allow_nan=False), st.integers(max_value=-1),
)


@settings(max_examples=80, deadline=None)
@given(which=st.sampled_from(TOLERANCES), value=st.one_of(NOT_REALS, OUT_OF_RANGE))
def test_bad_tolerances_name_the_argument(which, value):
    """Every tolerance refuses non-numbers (TypeError) and negative, NaN or infinite values
    (ValueError), with the argument's name in the message."""
    checker, arg = which
    with pytest.raises((TypeError, ValueError)) as info:
        CHECKERS[checker](**{arg: value})
    assert str(info.value).startswith(f"{arg} must be a"), str(info.value)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    assert info.type is (ValueError if is_number else TypeError)


@pytest.mark.parametrize("checker, arg", TOLERANCES)
@pytest.mark.parametrize("value", [1, np.float32(1e-3), np.float64(1e-5), np.int64(2)])
def test_tolerances_accept_python_and_numpy_numbers(checker, arg, value):
    CHECKERS[checker](**{arg: value})


def test_zero_tolerance_is_allowed():
    """rtol = atol = 0 demand exact agreement, which these inputs have."""
    testing.assert_monotone([-3.0, -2.0, -2.0], rtol=0)
    testing.check_posterior([0.5, 0.5], [-1.0, -1.0], atol=0.0)
    testing.check_decomposition([0.0, -np.inf], [1.0, 0.0], rtol=0.0)
    testing.check_gradient(lambda x: float(np.sum(x)), np.ones_like, [0.5, 2.0], eps=0.25,
                           rtol=0)


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be a positive finite number, got 0.0"):
        CHECKERS["check_gradient"](eps=0)
    with pytest.raises(ValueError, match="eps must be a positive finite number, got -1e-06"):
        CHECKERS["check_gradient"](eps=-1e-6)


@pytest.mark.parametrize(
    ("out", "got"),
    [(1 + 2j, "complex"), (np.complex128(1.0), "complex128"), (True, "bool"),
     (np.ones(1), r"ndarray of shape \(1,\)"), ([1.0], "list"), (None, "NoneType")],
)
def test_f_must_return_a_real_scalar(out, got):
    with pytest.raises(TypeError, match=f"f must return a real number, got {got}"):
        testing.check_gradient(lambda x: out, np.ones_like, np.ones(2))


def test_f_may_return_numpy_scalars_and_zero_d_arrays():
    for wrap in (np.float64, np.asarray, float):
        assert testing.check_gradient(lambda x, w=wrap: w(np.sum(x**2)), lambda x: 2 * x,
                                      np.ones(2), rtol=1e-5) < 1e-5


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: testing.assert_monotone([1.0, 2.0 + 1j]), "values"),
        (lambda: testing.check_decomposition(LJ + 0j, Q), "log_joint"),
        (lambda: testing.check_decomposition(LJ, Q + 0j), "q"),
        (lambda: testing.check_gradient(np.sin, np.cos, [0.3 + 0j]), "x"),
        (lambda: testing.check_gradient(np.sum, lambda x: np.ones(2) + 0j, np.ones(2)),
         r"grad\(x\)"),
        (lambda: testing.check_posterior(Q + 0j, LJ), "q"),
        (lambda: testing.check_posterior(Q, LJ + 0j), "log_joint"),
        (lambda: testing.assert_monotone(["a", "b"]), "values"),
    ],
)
def test_complex_and_string_arrays_are_type_errors(call, name):
    with pytest.raises(TypeError, match=f"^{name} must"):
        call()


def test_q_rows_off_by_1e7_report_the_deviation():
    q = Q.copy()
    q[1, 0] += 1e-7
    with pytest.raises(ValueError, match=r"row 1 sums to 1.0000001, off by 1e-07"):
        testing.check_decomposition(LJ, q)
    with pytest.raises(AssertionError,
                       match=r"row 1 of q sums to 1.0000001, not 1 \(off by 1e-07\)"):
        testing.check_posterior(q, LJ)


def test_assert_monotone_on_fits_run_with_tol_zero():
    heads, n = coins.from_strings(["HTTH", "HHHT", "TTTH", "HHHH"])
    res = coins.fit(heads, n, coins.Params(np.array([0.3, 0.6]), np.array([0.5, 0.5])),
                    tol=0, max_iter=200)
    assert res.n_iter == 200 and not res.converged
    testing.assert_monotone(res.log_likelihood, rtol=1e-12)
    res.check_sandwich(rtol=1e-12)


# ---------------------------------------------------------------- check_m_step
def _coins_setup(estimate_weights=True):
    heads, n = coins.from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT",
                                   "THHHTHHHTH"])
    theta = coins.Params(np.array([0.6, 0.5]), np.array([0.7, 0.3]))
    q = coins.e_step(heads, n, theta)

    def Q(r, p):
        return bounds.expected_complete_loglik(coins.log_joint(heads, n, p), r)

    def m_step(r, theta_old):
        return coins.m_step(heads, n, r, estimate_weights=estimate_weights,
                            weights=theta_old.weights, theta_old=theta_old.theta)

    return m_step, q, Q, theta


def _gmm_setup(covariance_type="full", seed=0):
    from emtutor import gmm

    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-2.0, 0.8, (50, 2)), rng.normal(1.5, 1.3, (70, 2))])
    cov = {"full": np.array([np.eye(2), 2 * np.eye(2)]),
           "diag": np.array([[1.0, 1.0], [2.0, 2.0]]), "spherical": np.array([1.0, 2.0])}
    theta = gmm.Params(np.array([0.4, 0.6]), np.array([[-1.0, 0.0], [1.0, 0.5]]),
                       cov[covariance_type])
    q = gmm.e_step(X, theta)[0]

    def Q(r, p):
        return bounds.expected_complete_loglik(gmm.log_joint(X, p), r)

    def m_step(r):
        return gmm.m_step(X, r, covariance_type=covariance_type, reg_covar=0.0)

    return m_step, q, Q, theta, X


def _hmm_setup(emission):
    from emtutor import hmm

    if emission == "categorical":
        true = hmm.Params(startprob=[0.6, 0.4], transmat=[[0.85, 0.15], [0.25, 0.75]],
                          emissionprob=[[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
        theta = hmm.Params(startprob=[0.5, 0.5], transmat=[[0.7, 0.3], [0.4, 0.6]],
                           emissionprob=[[0.4, 0.3, 0.3], [0.2, 0.3, 0.5]])
    else:
        cov = np.array([[0.5, 1.0], [2.0, 0.7]]) if emission == "diag" else np.array(
            [[[1.0, 0.3], [0.3, 0.8]], [[0.6, -0.2], [-0.2, 1.5]]])
        true = hmm.Params(startprob=[0.6, 0.4], transmat=[[0.85, 0.15], [0.25, 0.75]],
                          means=[[0.0, 1.0], [2.0, -1.0]], covariances=cov)
        theta = hmm.Params(startprob=[0.5, 0.5], transmat=[[0.7, 0.3], [0.4, 0.6]],
                           means=[[0.5, 0.5], [1.5, -0.5]], covariances=cov * 1.3)
    X = hmm.sample(true, 150, random_state=2)[0]

    def model(p):
        return p.log_startprob, p.log_transmat, hmm.log_emission(X, p)

    q = hmm.chain_posterior(*model(theta))

    def Q(post, p):
        return hmm.expected_complete_loglik(post.gamma, post.xi, *model(p))

    def m_step(post, theta_old):
        return hmm.m_step(X, post.gamma, post.xi.sum(axis=0), theta_old)

    return m_step, q, Q, theta


@pytest.mark.parametrize("estimate_weights", [True, False])
def test_check_m_step_passes_the_coins_m_step(estimate_weights):
    m_step, q, Q, theta = _coins_setup(estimate_weights)
    # weights held at theta_old are not estimated: declared fixed, they are not perturbed
    fixed = None if estimate_weights else {"weights": "fixed"}
    found = testing.check_m_step(m_step, q, Q, theta, constraints=fixed)
    assert found.largest_gain <= 0 and found.value == pytest.approx(Q(q, found.theta))
    # the maximiser by direct numerical optimisation of Q over the head probabilities
    from scipy.optimize import minimize

    res = minimize(lambda t: -Q(q, coins.Params(t, found.theta.weights)), theta.theta,
                   bounds=[(1e-6, 1 - 1e-6)] * 2, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12})
    np.testing.assert_allclose(found.theta.theta, res.x, atol=1e-5)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_m_step_passes_the_gmm_m_step(covariance_type, seed):
    m_step, q, Q, theta, _ = _gmm_setup(covariance_type, seed)
    found = testing.check_m_step(m_step, q, Q, theta, random_state=seed)
    assert found.largest_gain <= 0


@pytest.mark.parametrize("emission", ["categorical", "diag", "full"])
def test_check_m_step_passes_the_hmm_m_step(emission):
    m_step, q, Q, theta = _hmm_setup(emission)
    # fewer tries for full covariances, whose emission densities are slower to evaluate
    tries = 5 if emission == "full" else 20
    found = testing.check_m_step(m_step, q, Q, theta, n_perturbations=tries)
    assert found.largest_gain <= 0


def test_check_m_step_passes_the_missing_data_m_step_with_constraints():
    from emtutor import missing

    rng = np.random.default_rng(4)
    X = rng.multivariate_normal([1.0, -1.0, 0.5], [[2.0, 0.6, 0.2], [0.6, 1.0, -0.3],
                                                   [0.2, -0.3, 1.5]], size=80)
    X[rng.random(X.shape) < 0.2] = np.nan
    theta = (np.zeros(3), np.eye(3))
    stats = missing.e_step(X, *theta)
    found = testing.check_m_step(
        missing.m_step, stats, lambda s, p: missing.expected_complete_loglik(s, *p), theta,
        constraints={0: "real", 1: "covariance"})
    assert found.largest_gain <= 0


def test_check_m_step_catches_unnormalised_weights():
    m_step, q, Q, theta = _coins_setup()

    def unnormalised(r, theta_old):  # expected counts N_k, not N_k / N
        return coins.Params(m_step(r, theta_old).theta, r.sum(axis=0))

    with pytest.raises(AssertionError, match=r"^the M-step's output is not feasible: weights "
                       r"sums to 5, not 1 \(off by 4\); weights must be normalised"):
        testing.check_m_step(unnormalised, q, Q, theta)
    gmm_step, q, Q, theta, X = _gmm_setup()

    def unnormalised_gmm(r):
        return gmm_step(r)._replace(weights=r.sum(axis=0))

    with pytest.raises(AssertionError, match="weights sums to 120, not 1 \\(off by 119\\)"):
        testing.check_m_step(unnormalised_gmm, q, Q, theta)


@pytest.mark.parametrize("factor", [1.1, 1.001])
def test_check_m_step_catches_a_mean_off_by_a_factor(factor):
    m_step, q, Q, theta, _ = _gmm_setup()

    def scaled(r):
        p = m_step(r)
        return p._replace(means=factor * p.means)

    with pytest.raises(AssertionError, match=r"^the M-step's output does not maximise Q: moving "
                       r"means by a feasible step of relative size \S+ raises Q\(theta \| q\) "
                       r"from -\S+ to -\S+, by \S+ \(relative \S+, allowed 1e-10\)$"):
        testing.check_m_step(scaled, q, Q, theta)


def test_check_m_step_catches_an_m_step_that_ignores_the_responsibilities():
    m_step, q, Q, theta, _ = _gmm_setup()

    def uniform(r):  # every point counted equally in every component
        return m_step(np.full_like(r, 1.0 / r.shape[1]))

    with pytest.raises(AssertionError, match="does not maximise Q: moving weights by"):
        testing.check_m_step(uniform, q, Q, theta)

    def hard(r):  # hard assignments: the k-means-style step, not the maximiser of Q
        return m_step(np.eye(r.shape[1])[np.argmax(r, axis=1)])

    with pytest.raises(AssertionError, match="does not maximise Q: moving (weights|means|"
                                             "covariances|all parameters together) by"):
        testing.check_m_step(hard, q, Q, theta)
    coin_step, q, Q, theta = _coins_setup()

    def ignores(r, theta_old):  # the pooled head frequency for both coins
        return coin_step(np.full_like(r, 0.5), theta_old)

    with pytest.raises(AssertionError, match="(does not maximise|lowered) Q"):
        testing.check_m_step(ignores, q, Q, theta)


def test_check_m_step_catches_an_m_step_that_lowers_q():
    m_step, q, Q, theta = _coins_setup()

    def backwards(r, theta_old):  # away from the maximiser, past theta_old
        new = m_step(r, theta_old)
        return new._replace(theta=np.clip(2 * theta_old.theta - new.theta, 0.01, 0.99))

    with pytest.raises(AssertionError, match=r"^the M-step lowered Q: Q\(theta_new \| q\) = "
                       r"-\S+ is below Q\(theta \| q\) = -\S+ at the parameters q came "
                       r"from, by \S+ \(allowed \S+\); the M-step must maximise Q$"):
        testing.check_m_step(backwards, q, Q, theta)


def test_check_m_step_catches_infeasible_outputs():
    m_step, q, Q, theta = _coins_setup()

    def bad(field, value):
        return lambda r, t: m_step(r, t)._replace(**{field: value})

    cases = [
        (bad("theta", np.array([1.2, 0.4])),
         r"theta\[0\] = 1.2 exceeds 1 by 0.2; probabilities are in \[0, 1\]"),
        (bad("theta", np.array([0.5, -0.1])), r"theta\[1\] = -0.1 is negative, by 0.1"),
        (bad("weights", np.array([1.1, -0.1])), r"weights\[1\] = -0.1 is negative"),
        (bad("theta", np.array([0.5, np.nan])), r"theta\[1\] = nan, not a finite number"),
    ]
    for step, match in cases:
        with pytest.raises(AssertionError, match=match):
            testing.check_m_step(step, q, Q, theta)
    gmm_step, q, Q, theta, _ = _gmm_setup()
    not_pd = np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(AssertionError, match=r"covariances\[1\] is not positive definite: its "
                                             r"smallest eigenvalue is -1"):
        testing.check_m_step(lambda r: gmm_step(r)._replace(covariances=not_pd), q, Q, theta)
    asym = np.array([np.eye(2), [[1.0, 0.2], [0.0, 1.0]]])
    with pytest.raises(AssertionError, match=r"covariances is not symmetric: entry \[1, 0, 1\]"):
        testing.check_m_step(lambda r: gmm_step(r)._replace(covariances=asym), q, Q, theta)


class StudentHMM(NamedTuple):
    """A student's own container for HMM parameters (no validation)."""

    startprob: np.ndarray
    transmat: np.ndarray
    emissionprob: np.ndarray


def test_check_m_step_catches_an_hmm_transition_matrix_that_is_not_normalised():
    from emtutor import hmm

    m_step, q, Q, theta = _hmm_setup("categorical")

    def raw_counts(post, theta_old):  # expected transition counts, rows not normalised
        new = m_step(post, theta_old)
        return StudentHMM(new.startprob, post.xi.sum(axis=0), new.emissionprob)

    with pytest.raises(AssertionError, match=r"transmat sums to \S+ \(row \d\), not 1"):
        testing.check_m_step(raw_counts, q, lambda post, p: Q(post, hmm.Params(*p)), theta)


def test_check_m_step_bad_arguments():
    m_step, q, Q, theta = _coins_setup()
    cases = [
        ({"constraints": {"weights": "unit"}}, ValueError,
         "the feasible set of weights must be one of simplex, probability"),
        ({"constraints": {"mixing": "simplex"}}, ValueError,
         r"constraints names 'mixing', which is not a parameter of theta \(its parameters "
         r"are theta, weights\)"),
        ({"constraints": 3}, TypeError, "constraints must be None, a str or a mapping"),
        ({"n_perturbations": 0}, ValueError, "n_perturbations"),
        ({"rtol": -1.0}, ValueError, "rtol must be a finite number >= 0"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            testing.check_m_step(m_step, q, Q, theta, **kwargs)
    with pytest.raises(ValueError, match=r"cannot tell the feasible set of the parameter "
                       r"theta\[0\]; give constraints=\{'theta\[0\]': ...\}"):
        testing.check_m_step(lambda r: (0.5, 0.5), q, lambda r, p: -1.0, (0.5, 0.5))
    with pytest.raises(TypeError, match="m_step must be callable"):
        testing.check_m_step(None, q, Q, theta)
    with pytest.raises(ValueError, match="expected_complete_loglik is nan at a feasible "
                                         "perturbation of theta"):
        testing.check_m_step(m_step, q, lambda r, p: np.nan if p is not None and
                             not np.array_equal(p.theta, m_step(r, theta).theta) and
                             not np.array_equal(p.theta, theta.theta) else -1.0, theta)
    with pytest.raises(TypeError, match="expected_complete_loglik must return a real number"):
        testing.check_m_step(m_step, q, lambda r, p: "high", theta)


def test_check_m_step_on_arrays_tuples_and_fixed_fields():
    """A bare array or a plain tuple works with constraints; 'fixed' leaves a field alone."""
    heads, n = np.array([5, 9, 8, 4, 7]), 10
    q = np.array([[0.3, 0.7], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])

    def Q(r, t):
        lj = binom.logpmf(heads[:, None], n, np.asarray(t)) + np.log(0.5)
        return float(np.sum(r * lj))

    def m_step(r):
        return r.T @ heads / (n * r.sum(axis=0))

    found = testing.check_m_step(m_step, q, Q, np.array([0.5, 0.5]), constraints="probability")
    assert found.largest_gain <= 0
    found = testing.check_m_step(lambda r: tuple(m_step(r)), q, Q, (0.5, 0.5),
                                 constraints="probability")
    assert isinstance(found.theta, tuple)
    with pytest.raises(AssertionError, match=r"moving theta\[1\] by"):
        testing.check_m_step(lambda r: (m_step(r)[0], 0.9 * m_step(r)[1]), q, Q, (0.5, 0.5),
                             constraints="probability")
    # the same error is invisible when that field is declared fixed
    testing.check_m_step(lambda r: (m_step(r)[0], 0.9 * m_step(r)[1]), q, Q, (0.5, 0.5),
                         constraints={0: "probability", 1: "fixed"})


def _bernoulli_setup(prior=None):
    from emtutor import bernoulli

    rng = np.random.default_rng(5)
    true = bernoulli.Params(np.array([0.3, 0.7]),
                            rng.uniform(0.05, 0.95, size=(2, 12)))
    X = bernoulli.sample(true, 200, random_state=5)[0]
    theta = bernoulli.Params(np.array([0.5, 0.5]), rng.uniform(0.3, 0.7, size=(2, 12)))
    q = bernoulli.e_step(X, theta)[0]

    def Q(r, p):  # plus ln p(theta) for MAP: the objective its M-step maximises
        lp = 0.0 if prior is None else bernoulli.log_prior(p, prior)
        return bounds.expected_complete_loglik(bernoulli.log_joint(X, p), r) + lp

    def m_step(r, theta_old):
        return bernoulli.m_step(X, r, prior=prior, previous=theta_old)

    return m_step, q, Q, theta


@pytest.mark.parametrize("map_prior", [False, True])
def test_check_m_step_passes_the_bernoulli_m_step(map_prior):
    from emtutor import bernoulli

    prior = bernoulli.Prior(a=2.0, b=2.0, concentration=2.0) if map_prior else None
    m_step, q, Q, theta = _bernoulli_setup(prior)
    # the pixel probabilities are in [0, 1]: "means" is not a real vector here
    found = testing.check_m_step(m_step, q, Q, theta, constraints={"means": "probability"})
    assert found.largest_gain <= 0
    if map_prior:  # the maximum-likelihood step does not maximise Q + ln p(theta)
        ml_step = _bernoulli_setup(None)[0]
        with pytest.raises(AssertionError, match="does not maximise Q"):
            testing.check_m_step(ml_step, q, Q, theta, constraints={"means": "probability"})


def test_check_m_step_catches_bernoulli_mistakes():
    m_step, q, Q, theta = _bernoulli_setup()
    means = {"means": "probability"}

    def unnormalised(r, theta_old):  # the slip that gives ln p = +1829 on binary data
        return m_step(r, theta_old)._replace(weights=r.sum(axis=0))

    with pytest.raises(AssertionError, match=r"weights sums to 200, not 1 \(off by 199\)"):
        testing.check_m_step(unnormalised, q, Q, theta, constraints=means)

    def off(r, theta_old):
        p = m_step(r, theta_old)
        return p._replace(means=0.98 * p.means)

    with pytest.raises(AssertionError, match="does not maximise Q: moving means by"):
        testing.check_m_step(off, q, Q, theta, constraints=means)

    def overshoot(r, theta_old):
        p = m_step(r, theta_old)
        return p._replace(means=1.5 * p.means)

    with pytest.raises(AssertionError, match=r"means\[\d, \d+\] = \S+ exceeds 1 by"):
        testing.check_m_step(overshoot, q, Q, theta, constraints=means)


def test_check_m_step_catches_probabilities_shrunk_towards_one_half():
    """A smoothed (Beta(3, 3)) M-step checked against the plain-likelihood Q: its pixel
    probabilities sit nearer 1/2 than the maximiser's, a move that perturbations towards
    random points of [0, 1] (which pull towards 1/2 on average) could not reveal."""
    from emtutor import bernoulli

    _, q, Q, theta = _bernoulli_setup(None)
    smoothed = _bernoulli_setup(bernoulli.Prior(a=3.0, b=3.0, concentration=1.0))[0]
    with pytest.raises(AssertionError, match="does not maximise Q: moving means by"):
        testing.check_m_step(smoothed, q, Q, theta, constraints={"means": "probability"})


def test_unnormalised_weights_pass_the_run_checks_but_not_check_m_step():
    """The slip of the issue: a monotone trace, the sandwich and check=True all pass."""
    from emtutor import em

    heads, n = coins.from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT",
                                   "THHHTHHHTH"])

    def log_joint(p):
        # the student's own log joint: ln w_k + ln Binomial, with w taken as given
        return coins.log_joint(heads, n, coins.Params(p.theta, p.weights / p.weights.sum())) + (
            np.log(p.weights.sum()))

    def e_step(p):
        return bounds.posterior(log_joint(p))

    def m_step(r):  # forgets to divide the expected counts by N
        good = coins.m_step(heads, n, r)
        return coins.Params(good.theta, r.sum(axis=0))

    def Q(r, p):
        return bounds.expected_complete_loglik(log_joint(p), r)

    res = em.run(coins.Params(np.array([0.6, 0.5]), np.array([0.5, 0.5])), e_step, m_step,
                 lambda p: bounds.log_likelihood(log_joint(p)),
                 elbo=lambda r, p: bounds.elbo(log_joint(p), r), check=True)
    res.check_sandwich()
    # monotone, and "better" than the maximum likelihood of the correct model: impossible
    best = coins.fit(heads, n, coins.Params(np.array([0.6, 0.5]), np.array([0.5, 0.5])))
    assert res.decreases == () and res.log_likelihood[-1] > best.log_likelihood[-1] + 8
    q = e_step(res.thetas[3])
    with pytest.raises(AssertionError, match=r"weights sums to 5, not 1 \(off by 4\)"):
        testing.check_m_step(m_step, q, Q, res.thetas[3])
