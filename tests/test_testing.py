"""Tests of the student-facing checkers in emtutor.testing: they pass on good input and
fail on bad input with a message that says where and by how much."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

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
