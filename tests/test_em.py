"""Tests of the generic EM driver emtutor.em: stopping rule, warning, trace and sandwich."""

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from emtutor import bounds, coins, em
from emtutor.em import EMResult, LikelihoodDecreaseWarning, has_converged

pytestmark = pytest.mark.filterwarnings("error")

SETS = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]
HEADS, N_TOSSES = coins.from_strings(SETS)
P0 = coins.Params(np.array([0.6, 0.5]), np.array([0.5, 0.5]))


# ---------------------------------------------------------------- has_converged
@pytest.mark.parametrize(
    ("previous", "current", "tol", "expected"),
    [
        (-5.0, -5.0, 1e-10, True),  # no change
        (-5.0, -4.0, 1e-3, False),  # big increase
        (-0.5, -0.5 + 5e-11, 1e-10, True),  # |ln p| < 1: absolute tolerance
        (-0.5, -0.5 + 2e-10, 1e-10, False),
        (-1e6, -1e6 + 5e-5, 1e-10, True),  # |ln p| = 1e6: relative tolerance 1e-4
        (-1e6, -1e6 + 2e-4, 1e-10, False),
        (-0.5, -0.5 + 2.0**-20, 2.0**-20, False),  # the bound is strict: delta == tol * scale
        (-1e6, -1e6 - 5e-7, 1e-10, True),  # a drop within 1e-12 * 1e6 is rounding noise
        (1e3, 1e3 + 1e-8, 1e-12, False),  # positive log-likelihoods (densities) too
        (1e3, 1e3 + 1e-8, 1e-10, True),
    ],
)
def test_has_converged_cases(previous, current, tol, expected):
    assert has_converged(previous, current, tol=tol, iteration=1) is expected


def test_has_converged_warns_on_a_real_decrease():
    with pytest.warns(LikelihoodDecreaseWarning) as record:
        assert has_converged(-1e6, -1e6 - 2e-6, tol=1.0, iteration=7) is False
    message = str(record[0].message)
    assert "iteration 7" in message
    assert "drop of 2e-06" in message  # absolute size (float rounding of -1e6 - 2e-6 is tiny)
    assert "relative 2e-12" in message


def test_has_converged_decrease_is_never_convergence_even_with_huge_tol():
    with pytest.warns(LikelihoodDecreaseWarning, match=r"iteration 2: from -3 to -4, a drop of 1"):
        assert has_converged(-3.0, -4.0, tol=1e6, iteration=2) is False


def test_has_converged_noise_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert has_converged(-10.0, -10.0 - 1e-13, tol=1e-10, iteration=3) is True


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"tol": -1e-3}, ValueError, "tol must be a finite number >= 0, got -0.001"),
        ({"tol": np.nan}, ValueError, "tol must be a finite number >= 0, got nan"),
        ({"tol": np.inf}, ValueError, "tol must be a finite number >= 0, got inf"),
        ({"tol": "1e-3"}, TypeError, "tol must be a real number, got str"),
        ({"tol": True}, TypeError, "tol must be a real number, got bool"),
        ({"current": "-3.0"}, TypeError, "log-likelihood at iteration 4 must be a real number"),
        ({"current": True}, TypeError, "log-likelihood at iteration 4 must be a real number"),
        ({"previous": np.nan}, ValueError, "previous log-likelihood at iteration 4 is nan"),
        ({"current": -np.inf}, ValueError, "log-likelihood at iteration 4 is -inf"),
        ({"current": "x"}, TypeError, "log-likelihood at iteration 4 must be a real number"),
        ({"iteration": 1.5}, TypeError, "iteration must be an integer"),
    ],
)
def test_has_converged_bad_inputs(kwargs, exc, match):
    args = {"previous": -1.0, "current": -0.5, "tol": 1e-8, "iteration": 4} | kwargs
    with pytest.raises(exc, match=match):
        has_converged(args["previous"], args["current"], tol=args["tol"],
                      iteration=args["iteration"])


def toy_run(*args, **kwargs):
    """em.run on a toy model that has no bound, without its MissingElboWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.MissingElboWarning)
        return em.run(*args, **kwargs)


# ---------------------------------------------------------------- run on the coins
def coin_functions(estimate_weights=False):
    def e_step(p):
        return coins.e_step(HEADS, N_TOSSES, p)

    def m_step(r):
        return coins.m_step(HEADS, N_TOSSES, r, estimate_weights=estimate_weights,
                            weights=P0.weights)

    def log_likelihood(p):
        return coins.log_likelihood(HEADS, N_TOSSES, p)

    def elbo(r, p):
        return bounds.elbo(coins.log_joint(HEADS, N_TOSSES, p), r)

    return e_step, m_step, log_likelihood, elbo


@pytest.mark.parametrize("estimate_weights", [False, True])
def test_run_trace_on_coins(estimate_weights):
    e_step, m_step, log_likelihood, elbo = coin_functions(estimate_weights)
    res = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, tol=1e-12)
    assert res.converged
    assert len(res.thetas) == res.n_iter + 1 == res.log_likelihood.size
    assert res.elbo.size == res.n_iter
    assert res.theta is res.thetas[-1] and res.thetas[0] is P0
    # monotone, with a slack for rounding only
    diffs = np.diff(res.log_likelihood)
    assert np.all(diffs >= -1e-12 * np.abs(res.log_likelihood[1:]))
    # the parameters match a hand-written loop, and each log-likelihood is evaluated at them
    p = P0
    for i in range(res.n_iter + 1):
        np.testing.assert_allclose(res.thetas[i].theta, p.theta, rtol=1e-14)
        np.testing.assert_allclose(res.thetas[i].weights, p.weights, rtol=1e-14)
        assert res.log_likelihood[i] == log_likelihood(res.thetas[i])
        if i < res.n_iter:
            r = e_step(p)
            p = m_step(r)
            assert res.elbo[i] == pytest.approx(elbo(r, p), rel=1e-14)
    res.check_sandwich()
    # the last step changed ln p by less than the tolerance
    last = res.log_likelihood[-1] - res.log_likelihood[-2]
    assert 0 <= last < 1e-12 * max(1.0, abs(res.log_likelihood[-1])) or last == 0


def test_run_reproduces_do_and_batzoglou():
    e_step, m_step, log_likelihood, _ = coin_functions()
    with pytest.warns(em.MissingElboWarning):
        res = em.run(P0, e_step, m_step, log_likelihood, max_iter=10)
    assert res.n_iter == 10 and not res.converged
    np.testing.assert_allclose(res.thetas[1].theta, [0.71, 0.58], atol=0.005)
    np.testing.assert_allclose(res.thetas[10].theta, [0.80, 0.52], atol=0.005)
    assert res.elbo is None
    with pytest.raises(ValueError, match="recorded no ELBO"):
        res.check_sandwich()


def test_run_callback_sees_every_iteration():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    calls = []

    def callback(i, theta, q, ll):
        calls.append((i, theta, q, ll))

    res = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, callback=callback)
    assert [c[0] for c in calls] == list(range(1, res.n_iter + 1))
    for i, theta, q, ll in calls:
        assert theta is res.thetas[i]
        assert ll == res.log_likelihood[i]
        np.testing.assert_allclose(q, e_step(res.thetas[i - 1]), rtol=1e-15)


def test_run_zero_iterations():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    res = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, max_iter=0)
    assert res.n_iter == 0 and not res.converged and res.theta is P0
    assert res.thetas == [P0] and res.log_likelihood.shape == (1,) and res.elbo.shape == (0,)
    res.check_sandwich()


def test_result_is_frozen():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    res = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, max_iter=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.converged = True


# ---------------------------------------------------------------- another model, theta a dataclass
@dataclasses.dataclass(frozen=True)
class MixParams:
    means: np.ndarray
    weights: np.ndarray


X = np.array([-2.1, -1.7, -2.5, -1.2, 0.3, 1.9, 2.2, 2.8, 1.6, 2.4])
SIGMA = 1.0


def mix_log_joint(p):
    return norm.logpdf(X[:, None], p.means[None, :], SIGMA) + np.log(p.weights)


def mix_m_step(r):
    nk = r.sum(axis=0)
    return MixParams(r.T @ X / nk, nk / nk.sum())


def test_run_on_gaussian_mixture_with_dataclass_theta():
    p0 = MixParams(np.array([-0.5, 0.5]), np.array([0.5, 0.5]))
    res = em.run(
        p0,
        lambda p: bounds.posterior(mix_log_joint(p)),
        mix_m_step,
        lambda p: bounds.log_likelihood(mix_log_joint(p)),
        elbo=lambda r, p: bounds.elbo(mix_log_joint(p), r),
    )
    assert res.converged and isinstance(res.theta, MixParams)
    res.check_sandwich()
    # at a fixed point of EM the gradient of ln p with respect to the means vanishes
    r = bounds.posterior(mix_log_joint(res.theta))
    grad = (r * (X[:, None] - res.theta.means)).sum(axis=0) / SIGMA**2
    np.testing.assert_allclose(grad, 0.0, atol=1e-4)
    assert res.theta.means[0] < -1 < 1 < res.theta.means[1]


def test_run_with_array_theta():
    """theta may be a plain array: a one-component 'mixture' converges in one step."""
    def log_lik(m):
        return float(norm.logpdf(X, m[0], SIGMA).sum())

    # no latent variable: q is nothing and L(q, m) = ln p(V | m)
    res = em.run(np.array([0.0]), lambda m: None, lambda q: np.array([X.mean()]), log_lik,
                 elbo=lambda q, m: log_lik(m), check=True)
    assert res.converged and res.n_iter == 2
    np.testing.assert_allclose(res.theta, X.mean(), rtol=1e-15)


# ---------------------------------------------------------------- a wrong M-step
def test_wrong_m_step_warns_and_does_not_converge():
    """An M-step that moves away from the maximiser lowers ln p at every iteration."""
    e_step, _, log_likelihood, elbo = coin_functions()

    def wrong_m_step(r):
        good = coins.m_step(HEADS, N_TOSSES, r, estimate_weights=False)
        return coins.Params(np.clip(1.5 * good.theta - 0.3, 0.01, 0.99), good.weights)

    with pytest.warns(LikelihoodDecreaseWarning, match=r"decreased at iteration \d+") as rec:
        res = em.run(P0, e_step, wrong_m_step, log_likelihood, elbo=elbo, max_iter=20)
    assert not res.converged
    assert len(rec) >= 1
    drops = np.flatnonzero(np.diff(res.log_likelihood) < 0) + 1
    assert f"iteration {drops[0]}:" in str(rec[0].message)
    with pytest.raises(AssertionError, match=r"iteration \d+: L\(q_\d+, theta_\d+\)"):
        res.check_sandwich()


def test_toy_decreasing_step_warns_each_time():
    with pytest.warns(LikelihoodDecreaseWarning) as rec:
        res = toy_run(0.0, lambda t: t, lambda q: q + 1.0, lambda t: -(t**2), max_iter=3)
    assert not res.converged and res.n_iter == 3
    assert [str(w.message).split(":")[0] for w in rec] == [
        f"log-likelihood decreased at iteration {i}" for i in (1, 2, 3)
    ]
    assert "from -1 to -4, a drop of 3 (relative 0.75)" in str(rec[1].message)


# ---------------------------------------------------------------- check_sandwich
def test_check_sandwich_names_first_failure():
    ll = np.array([-10.0, -9.0, -8.0, -7.0])
    ok = EMResult(theta=3, thetas=[0, 1, 2, 3], log_likelihood=ll,
                  elbo=np.array([-9.5, -8.5, -7.5]), n_iter=3, converged=False)
    ok.check_sandwich()
    low = EMResult(theta=3, thetas=[0, 1, 2, 3], log_likelihood=ll,
                   elbo=np.array([-9.5, -9.25, -7.5]), n_iter=3, converged=False)
    with pytest.raises(AssertionError, match=r"iteration 1: L\(q_1, theta_2\) = -9.25 is below "
                       r"ln p\(V \| theta_1\) = -9 by 0.25"):
        low.check_sandwich()
    high = EMResult(theta=3, thetas=[0, 1, 2, 3], log_likelihood=ll,
                    elbo=np.array([-9.5, -8.5, -6.5]), n_iter=3, converged=False)
    with pytest.raises(AssertionError, match=r"iteration 2: .* exceeds ln p\(V \| theta_3\) = -7 "
                       r"by 0.5"):
        high.check_sandwich()


def test_check_sandwich_tolerance_scales_with_magnitude():
    ll = np.array([-1e6, -1e6 + 1.0])
    res = EMResult(theta=1, thetas=[0, 1], log_likelihood=ll,
                   elbo=np.array([-1e6 - 5e-5]), n_iter=1, converged=False)
    res.check_sandwich(rtol=1e-10)  # 5e-5 < 1e-10 * 1e6
    with pytest.raises(AssertionError, match="iteration 0"):
        res.check_sandwich(rtol=1e-12)
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        res.check_sandwich(rtol=-1.0)


# ---------------------------------------------------------------- bad inputs to run
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"tol": -1.0}, ValueError, "tol must be a finite number >= 0, got -1.0"),
        ({"tol": "0"}, TypeError, "tol must be a real number, got str"),
        ({"max_iter": "abc"}, TypeError, "max_iter must be an integer, got str"),
        ({"max_iter": None}, TypeError, "max_iter must be an integer, got NoneType"),
        ({"max_iter": 10.0}, TypeError, "max_iter must be an integer, got float"),
        ({"max_iter": -1}, ValueError, "max_iter must be >= 0, got -1"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an integer, got float"),
        ({"max_iter": True}, TypeError, "max_iter must be an integer, got bool"),
        ({"elbo": 3}, TypeError, "elbo must be callable, got int"),
        ({"callback": "print"}, TypeError, "callback must be callable, got str"),
    ],
)
def test_run_bad_options(kwargs, exc, match):
    e_step, m_step, log_likelihood, _ = coin_functions()
    with pytest.raises(exc, match=match):
        em.run(P0, e_step, m_step, log_likelihood, **kwargs)


@pytest.mark.parametrize("which", ["e_step", "m_step", "log_likelihood"])
def test_run_non_callable(which):
    funcs = dict(zip(["e_step", "m_step", "log_likelihood"], coin_functions()[:3], strict=True))
    funcs[which] = None
    with pytest.raises(TypeError, match=f"{which} must be callable, got NoneType"):
        em.run(P0, funcs["e_step"], funcs["m_step"], funcs["log_likelihood"])


def test_run_non_finite_log_likelihood_names_iteration():
    with pytest.raises(ValueError, match="log-likelihood at iteration 0 is nan"):
        toy_run(0.0, lambda t: t, lambda q: q, lambda t: np.nan)
    values = iter([-3.0, -2.0, -np.inf])
    with pytest.raises(ValueError, match="log-likelihood at iteration 2 is -inf"):
        toy_run(0.0, lambda t: t, lambda q: q + 1, lambda t: next(values))
    with pytest.raises(ValueError, match=r"ELBO L\(q_0, theta_1\) at iteration 1 is nan"):
        em.run(0.0, lambda t: t, lambda q: q + 1, lambda t: -1.0, elbo=lambda q, t: np.nan)
    with pytest.raises(TypeError, match="log-likelihood at iteration 0 must be a real number"):
        toy_run(0.0, lambda t: t, lambda q: q, lambda t: [1.0, 2.0])


# ---------------------------------------------------------------- tol = 0 and decreases
def test_has_converged_with_tol_zero_never_converges():
    assert has_converged(-3.0, -3.0, tol=0, iteration=1) is False
    assert has_converged(-3.0, -3.0 - 1e-14, tol=0.0, iteration=1) is False


@pytest.mark.parametrize("max_iter", [0, 1, 25])
def test_run_with_tol_zero_runs_exactly_max_iter_iterations(max_iter):
    e_step, m_step, log_likelihood, bound = coin_functions()
    res = em.run(P0, e_step, m_step, log_likelihood, elbo=bound, tol=0, max_iter=max_iter)
    assert res.n_iter == max_iter and len(res.thetas) == max_iter + 1
    assert not res.converged and res.decreases == ()
    res.check_sandwich()


@pytest.mark.parametrize(
    ("value", "name"), [("-3.0", "str"), (True, "bool"), (None, "NoneType"), ([1.0], "list")]
)
def test_run_refuses_a_log_likelihood_that_is_not_a_real_number(value, name):
    with pytest.raises(TypeError, match=f"log-likelihood at iteration 0 must be a real number, "
                                        f"got {name}"):
        toy_run(0.0, lambda t: t, lambda q: q, lambda t: value)


def test_run_accepts_numpy_scalars_and_one_element_arrays():
    res = toy_run(0.0, lambda t: t, lambda q: q, lambda t: np.array([-1.5]), max_iter=2)
    assert res.log_likelihood.tolist() == [-1.5, -1.5]
    res = toy_run(0.0, lambda t: t, lambda q: q, lambda t: np.float32(-1.5), max_iter=2)
    assert res.converged


def buggy_run(drops):
    """em.run on a fake model whose log-likelihood follows ``drops`` (a bad M-step)."""
    values = iter(drops)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", em.MissingElboWarning)  # a fake model has no bound
        res = em.run(0, lambda t: t, lambda q: q + 1, lambda t: next(values),
                     max_iter=len(drops) - 1, tol=1e-3)
    return res, caught


def test_decreases_are_recorded_and_a_run_with_one_never_looks_converged():
    # The last step is tiny (converged by the rule), but iterations 2 and 4 went down.
    res, caught = buggy_run([-10.0, -9.0, -9.5, -9.0, -9.25, -9.2, -9.2 + 1e-9])
    assert res.n_iter == 6
    assert [i for i, _ in res.decreases] == [2, 4]
    assert res.decreases[0][1] == pytest.approx(0.5) and res.decreases[1][1] == pytest.approx(0.25)
    assert res.converged is False
    assert sum(issubclass(w.category, LikelihoodDecreaseWarning) for w in caught) == 2
    assert "decreases=((iteration 2: -0.5), (iteration 4: -0.25))" in repr(res)


def test_rounding_noise_is_not_a_decrease():
    res, caught = buggy_run([-10.0, -9.0, -9.0 - 1e-13, -9.0 - 1e-13])
    assert res.decreases == () and res.converged
    assert not caught


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30))
def test_find_decreases_is_every_drop_beyond_rounding(trace):
    found = dict(em.find_decreases(trace))
    for i in range(1, len(trace)):
        drop = trace[i - 1] - trace[i]
        beyond = drop > em.NOISE_RTOL * max(1.0, abs(trace[i]))
        assert (i in found) == beyond
        if beyond:
            assert found[i] == drop


# ---------------------------------------------------------------- the rate of convergence
Y_LINKAGE = (125, 18, 20, 34)  # Dempster, Laird and Rubin (1977), section 1


def linkage_e_step(t):
    y1 = Y_LINKAGE[0]
    return y1 * (t[0] / 4) / (0.5 + t[0] / 4)


def linkage_m_step(x2):
    _, y2, y3, y4 = Y_LINKAGE
    return np.array([(x2 + y4) / (x2 + y2 + y3 + y4)])


def linkage_map(t):
    return linkage_m_step(linkage_e_step(t))


def linkage_log_lik(t):
    y1, y2, y3, y4 = Y_LINKAGE
    t = t[0]
    return float(y1 * np.log(2 + t) + (y2 + y3) * np.log(1 - t) + y4 * np.log(t))


def linkage_bound(x2, t):
    """L(q, t) = ln p(V | t) - KL(q || posterior): y1 splits independently, x2 / y1 each."""
    a, post = x2 / Y_LINKAGE[0], t[0] / (2 + t[0])
    kl = a * np.log(a / post) + (1 - a) * np.log((1 - a) / (1 - post))
    return linkage_log_lik(t) - Y_LINKAGE[0] * float(kl)


def test_rate_matrix_of_a_linear_map_is_the_map():
    a = np.random.default_rng(0).normal(size=(4, 4)) * 0.3
    centre = np.array([1.0, -2.0, 0.5, 3.0])
    jac = em.rate_matrix(lambda t: centre + a @ (t - centre), centre)
    np.testing.assert_allclose(jac, a, rtol=0, atol=1e-9)
    assert em.convergence_rate(lambda t: centre + a @ (t - centre), centre) == pytest.approx(
        np.max(np.abs(np.linalg.eigvals(a))), rel=1e-8
    )


def test_linkage_rate_is_the_published_one_and_the_missing_information_fraction():
    res = em.run(np.array([0.5]), linkage_e_step, linkage_m_step, linkage_log_lik,
                 elbo=linkage_bound, tol=0, max_iter=40, check=True)
    res.check_sandwich()
    t = float(res.theta[0])
    assert t == pytest.approx(0.6268214980, abs=1e-9)  # the paper's value
    rate = em.convergence_rate(linkage_map, res.theta)
    assert rate == pytest.approx(0.1328, abs=5e-5)  # the paper reports 0.1328
    # I_obs: minus the second derivative of ln p, by central differences of ln p itself.
    h = 1e-4
    i_obs = -(linkage_log_lik([t + h]) - 2 * linkage_log_lik([t]) + linkage_log_lik([t - h])) / h**2
    # I_c: the expected complete-data information at t (x2 is the expected hidden count).
    _, y2, y3, y4 = Y_LINKAGE
    x2 = linkage_e_step([t])
    i_c = (x2 + y4) / t**2 + (y2 + y3) / (1 - t) ** 2
    assert rate == pytest.approx(1 - i_obs / i_c, rel=1e-6)
    # The measured ratio of successive errors agrees with the predicted rate.
    errors = np.abs(np.array([th[0] for th in res.thetas[:12]]) - t)
    ratios = errors[1:] / errors[:-1]
    assert ratios[-1] == pytest.approx(rate, rel=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"theta_star": [[0.5]]}, ValueError, "theta_star must be 1-D"),
        ({"theta_star": [np.nan]}, ValueError, "theta_star contains NaN"),
        ({"step": 0.0}, ValueError, "step must be a positive finite number"),
        ({"step": "small"}, TypeError, "step must be a real number"),
        ({"em_map": lambda t: np.ones(2)}, ValueError, "returned a vector of size 2"),
        ({"em_map": lambda t: t * np.inf}, ValueError, "non-finite"),
    ],
)
def test_rate_matrix_bad_input(kwargs, exc, match):
    args = {"em_map": linkage_map, "theta_star": [0.6268], **kwargs}
    with pytest.raises(exc, match=match):
        em.rate_matrix(args.pop("em_map"), args.pop("theta_star"), **args)


# ---------------------------------------------------------------- no bound: one warning
def test_run_without_elbo_warns_once_with_a_hint():
    e_step, m_step, log_likelihood, _ = coin_functions()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = em.run(P0, e_step, m_step, log_likelihood, tol=0, max_iter=5)
    assert res.n_iter == 5
    assert [w.category for w in caught] == [em.MissingElboWarning]
    assert issubclass(em.MissingElboWarning, UserWarning)
    assert "MissingElboWarning" in em.__all__
    message = str(caught[0].message)
    assert "em.run got no elbo" in message
    assert "pass elbo=lambda q, theta: L(q, theta)" in message
    assert "emtutor.bounds.elbo(log_joint(theta), q)" in message
    assert caught[0].filename == __file__  # points at the caller, not at em.py


def test_run_with_elbo_does_not_warn():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        em.run(P0, e_step, m_step, log_likelihood, elbo=elbo)


# ---------------------------------------------------------------- m_step(q, theta_old)
def test_m_step_with_two_parameters_receives_the_parameters_of_the_e_step():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    seen = []

    def m_step_old(r, theta_old):
        seen.append((r, theta_old))
        return m_step(r)

    res = em.run(P0, e_step, m_step_old, log_likelihood, elbo=elbo, tol=0, max_iter=6)
    plain = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, tol=0, max_iter=6)
    assert len(seen) == 6
    for i, (r, theta_old) in enumerate(seen):
        assert theta_old is res.thetas[i]  # theta_{i}, the one q_i was computed from
        np.testing.assert_array_equal(r, e_step(res.thetas[i]))
    np.testing.assert_array_equal(res.log_likelihood, plain.log_likelihood)


def test_generalised_em_with_theta_old_is_monotone_and_passes_the_checks():
    """Half a step from theta_old towards the maximiser: Q still rises, EM still climbs."""
    e_step, m_step, log_likelihood, elbo = coin_functions()

    def half_step(r, theta_old):
        return coins.Params(0.5 * (theta_old.theta + m_step(r).theta), theta_old.weights)

    res = em.run(P0, e_step, half_step, log_likelihood, elbo=elbo, check=True, tol=1e-12)
    full = em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, tol=1e-12)
    res.check_sandwich()
    assert res.converged and res.n_iter > full.n_iter
    np.testing.assert_allclose(res.theta.theta, full.theta.theta, atol=1e-5)


def test_wants_theta_old_rule():
    import functools

    class Model:
        def m_step(self, q):
            return q

        def m_step_old(self, q, theta_old):
            return q

    assert em.wants_theta_old(lambda q: q) is False
    assert em.wants_theta_old(lambda q, theta_old: q) is True
    assert em.wants_theta_old(lambda q, theta_old=None: q) is False
    assert em.wants_theta_old(lambda q, *, extra=1: q) is False
    assert em.wants_theta_old(lambda *args: args[0]) is False
    assert em.wants_theta_old(Model().m_step) is False  # self is bound
    assert em.wants_theta_old(Model().m_step_old) is True
    assert em.wants_theta_old(functools.partial(coins.m_step, HEADS, N_TOSSES)) is False
    assert em.wants_theta_old(abs) is False
    with pytest.raises(TypeError, match=r"m_step must be m_step\(q\) or m_step\(q, theta_old\), "
                       r"got one with 3 required positional parameters \(a, b, c\)"):
        em.wants_theta_old(lambda a, b, c: a)
    e_step, _, log_likelihood, elbo = coin_functions()
    with pytest.raises(TypeError, match="3 required positional parameters"):
        em.run(P0, e_step, lambda a, b, c: a, log_likelihood, elbo=elbo)


# ---------------------------------------------------------------- check=True
_RNG = np.random.default_rng(3)
GMM_X = np.concatenate([_RNG.normal(-2, 0.7, (40, 2)), _RNG.normal(1.5, 1.2, (60, 2))])


def gmm_problem():
    from emtutor import gmm

    data = GMM_X
    theta0 = gmm.Params(np.array([0.3, 0.7]), np.array([[-1.0, 0.0], [1.0, 0.5]]),
                        np.array([np.eye(2), 2 * np.eye(2)]))
    return dict(
        theta0=theta0,
        e_step=lambda th: gmm.e_step(data, th)[0],
        m_step=lambda q: gmm.m_step(data, q, covariance_type="full", reg_covar=0.0),
        log_likelihood=lambda th: gmm.log_likelihood(data, th),
        elbo=lambda q, th: bounds.elbo(gmm.log_joint(data, th), q),
    )


def hmm_problem():
    from emtutor import hmm

    theta0 = hmm.Params(startprob=[0.6, 0.4], transmat=[[0.8, 0.2], [0.3, 0.7]],
                        emissionprob=[[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
    rolls = hmm.sample(theta0, 120, random_state=1)[0]

    def model(th):
        return th.log_startprob, th.log_transmat, hmm.log_emission(rolls, th)

    return dict(
        theta0=hmm.Params(startprob=[0.5, 0.5], transmat=[[0.6, 0.4], [0.4, 0.6]],
                          emissionprob=[[0.4, 0.3, 0.3], [0.2, 0.3, 0.5]]),
        e_step=lambda th: hmm.chain_posterior(*model(th)),
        m_step=lambda q, th: hmm.m_step(rolls, q.gamma, q.xi.sum(axis=0), th),
        log_likelihood=lambda th: hmm.score(rolls, th),
        elbo=lambda q, th: hmm.elbo(q.gamma, q.xi, *model(th)),
    )


def coins_problem(estimate_weights=True):
    e_step, m_step, log_likelihood, elbo = coin_functions(estimate_weights)
    p0 = coins.Params(np.array([0.6, 0.5]), np.array([0.8, 0.2]))
    return dict(theta0=p0, e_step=e_step, m_step=m_step, log_likelihood=log_likelihood,
                elbo=elbo)


@pytest.mark.parametrize("problem", [coins_problem, gmm_problem, hmm_problem])
def test_check_passes_on_correct_em(problem):
    args = problem()
    res = em.run(args.pop("theta0"), args.pop("e_step"), args.pop("m_step"),
                 args.pop("log_likelihood"), **args, check=True, tol=1e-10)
    assert res.n_iter > 3
    res.check_sandwich()


def run_checked(problem, **changes):
    args = problem() | changes
    return em.run(args.pop("theta0"), args.pop("e_step"), args.pop("m_step"),
                  args.pop("log_likelihood"), **args, check=True, max_iter=50)


E_STEP_NOT_EXACT = (r"check at iteration 1 \(E-step\): KL\(q_0 \|\| p\(Z \| V, theta_0\)\) = "
                    r"ln p\(V \| theta_0\) - L\(q_0, theta_0\) = \d\S* > 0 \(allowed \S+\): "
                    r"q is not the exact posterior.*mixing weights")


def test_check_catches_a_tempered_e_step():
    def tempered(p):  # q proportional to p(z | v)^0.5
        return bounds.posterior(0.5 * coins.log_joint(HEADS, N_TOSSES, p))

    with pytest.raises(AssertionError, match=E_STEP_NOT_EXACT):
        run_checked(coins_problem, e_step=tempered)


def test_check_catches_an_e_step_that_forgets_the_mixing_weights():
    def no_weights(p):  # the posterior of the likelihoods alone: ln w_k left out
        return bounds.posterior(coins.log_joint(HEADS, N_TOSSES, p) - np.log(p.weights))

    with pytest.raises(AssertionError, match=E_STEP_NOT_EXACT):
        run_checked(coins_problem, e_step=no_weights)


def test_check_catches_forgotten_mixing_weights_in_a_gaussian_mixture():
    from emtutor import gmm

    def no_weights(th):
        return bounds.posterior(gmm.log_joint(GMM_X, th) - np.log(th.weights))

    with pytest.raises(AssertionError, match=r"iteration 1 \(E-step\): KL.* = \d\S* > 0"):
        run_checked(gmm_problem, e_step=no_weights)


def test_check_catches_an_unnormalised_posterior():
    def unnormalised(p):
        return np.exp(coins.log_joint(HEADS, N_TOSSES, p))

    with pytest.raises(AssertionError, match=r"check at iteration 1 \(E-step\): row \d of q sums "
                                             r"to 0\.\d+, not 1 \(off by -0\.\d+\)"):
        run_checked(coins_problem, e_step=unnormalised)

    def negative(p):
        return coins.e_step(HEADS, N_TOSSES, p) * np.array([1.5, -0.5])

    with pytest.raises(AssertionError, match=r"iteration 1 \(E-step\): q\[0, 1\] = -0\.\d+; "
                                             r"a posterior has finite entries >= 0"):
        run_checked(coins_problem, e_step=negative)


def test_check_catches_an_m_step_that_lowers_q():
    def wrong_m_step(r):
        good = coins.m_step(HEADS, N_TOSSES, r, estimate_weights=False)
        return coins.Params(np.clip(1.5 * good.theta - 0.3, 0.01, 0.99), good.weights)

    with pytest.raises(AssertionError, match=r"check at iteration 1 \(M-step\): Q decreased: "
                                             r"L\(q_0, theta_1\) = -\S+ is below "
                                             r"L\(q_0, theta_0\) = -\S+ by \d"):
        run_checked(coins_problem, m_step=wrong_m_step)


def test_check_catches_a_bound_above_the_log_likelihood():
    *_, elbo = coin_functions()
    with pytest.raises(AssertionError, match=r"iteration 1 \(E-step\): L\(q_0, theta_0\) = \S+ "
                       r"exceeds ln p\(V \| theta_0\) = \S+ by 1, a negative"):
        run_checked(coins_problem, elbo=lambda r, p: elbo(r, p) + 1.0)


def test_check_needs_an_elbo_and_a_bool():
    e_step, m_step, log_likelihood, elbo = coin_functions()
    with pytest.raises(ValueError, match=r"check=True needs elbo=\.\.\."):
        em.run(P0, e_step, m_step, log_likelihood, check=True)
    with pytest.raises(TypeError, match="check must be True or False, got str"):
        em.run(P0, e_step, m_step, log_likelihood, elbo=elbo, check="yes")


@pytest.mark.parametrize("check", [False, True])
def test_check_costs_nothing_unless_asked(check):
    """check=False evaluates the bound once per iteration, check=True twice."""
    e_step, m_step, log_likelihood, elbo = coin_functions()
    calls = []

    def counted(r, p):
        calls.append(p)
        return elbo(r, p)

    res = em.run(P0, e_step, m_step, log_likelihood, elbo=counted, check=check, tol=0,
                 max_iter=7)
    assert len(calls) == (2 if check else 1) * res.n_iter
