"""Tests of the two-coin mixture emtutor.coins against Do and Batzoglou (2008) and brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from emtutor import bounds, coins, em, testing
from emtutor.coins import EmptyComponentWarning, Params

pytestmark = pytest.mark.filterwarnings("error")

SETS = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]
HEADS, N_TOSSES = coins.from_strings(SETS)
P0 = Params(np.array([0.6, 0.5]), np.array([0.5, 0.5]))


def brute_joint(heads, n_tosses, params):
    """p(v_n, z_n = k) written out from the binomial pmf, one set and coin at a time."""
    h = np.asarray(heads)
    n = np.broadcast_to(n_tosses, h.shape)
    return np.array(
        [[w * binom.pmf(h[i], n[i], t) for t, w in zip(*params, strict=True)]
         for i in range(h.size)]
    )


# ---------------------------------------------------------------- data
def test_from_strings_counts():
    np.testing.assert_array_equal(HEADS, [5, 9, 8, 4, 7])
    np.testing.assert_array_equal(N_TOSSES, [10] * 5)
    heads, n = coins.from_strings(("hT", "TTT"))
    np.testing.assert_array_equal(heads, [1, 0])
    np.testing.assert_array_equal(n, [2, 3])
    assert heads.dtype.kind == "i" and n.dtype.kind == "i"


@pytest.mark.parametrize(
    ("seqs", "exc", "match"),
    [
        (["HTXH"], ValueError, r"sequence 0 has the character 'X' at position 2"),
        (["HT", "H T"], ValueError, r"sequence 1 has the character ' ' at position 1"),
        ([], ValueError, "sequences is empty"),
        (["HT", ""], ValueError, "sequence 1 is empty"),
        ("HTTH", TypeError, "not a single string"),
        (["HT", 3], TypeError, "sequence 1 must be a string, got int"),
    ],
)
def test_from_strings_bad_input(seqs, exc, match):
    with pytest.raises(exc, match=match):
        coins.from_strings(seqs)


# ---------------------------------------------------------------- model functions
def test_log_joint_matches_binomial_pmf():
    params = Params(np.array([0.3, 0.8, 1.0]), np.array([0.2, 0.5, 0.3]))
    n = np.array([10, 10, 4, 7, 10])
    heads = np.array([5, 9, 4, 0, 10])
    lj = coins.log_joint(heads, n, params)
    assert lj.shape == (5, 3)
    with np.errstate(divide="ignore"):
        expected = np.log(brute_joint(heads, n, params))
    np.testing.assert_allclose(lj, expected, rtol=1e-12)
    assert lj[0, 2] == -np.inf  # theta = 1 cannot give tails


def test_log_joint_is_a_true_joint():
    """Summed over every possible head count and coin, p(v, z) adds up to 1."""
    params = Params(np.array([0.35, 0.9]), np.array([0.4, 0.6]))
    all_heads = np.arange(13)
    lj = coins.log_joint(all_heads, 12, params)
    np.testing.assert_allclose(np.exp(lj).sum(axis=0), params.weights, rtol=1e-12)
    assert np.exp(lj).sum() == pytest.approx(1.0, rel=1e-12)


def test_scalar_and_array_n_tosses_agree():
    a = coins.log_joint(HEADS, 10, P0)
    b = coins.log_joint(HEADS, np.full(5, 10), P0)
    np.testing.assert_array_equal(a, b)


def test_e_step_and_log_likelihood_by_hand():
    params = Params(np.array([0.2, 0.7]), np.array([0.3, 0.7]))
    joint = brute_joint(HEADS, N_TOSSES, params)
    np.testing.assert_allclose(
        coins.e_step(HEADS, N_TOSSES, params), joint / joint.sum(axis=1, keepdims=True),
        rtol=1e-12,
    )
    assert coins.log_likelihood(HEADS, N_TOSSES, params) == pytest.approx(
        np.log(joint.sum(axis=1)).sum(), rel=1e-12
    )


def test_m_step_maximises_q():
    """The closed form beats every nearby theta and weight vector on Q(theta, theta_old)."""
    rng = np.random.default_rng(0)
    n = np.array([10, 12, 8, 10, 15])
    heads = np.array([5, 11, 2, 7, 9])
    resp = coins.e_step(heads, n, Params(np.array([0.3, 0.7]), np.array([0.4, 0.6])))
    best = coins.m_step(heads, n, resp)

    def q_value(p):
        return bounds.expected_complete_loglik(coins.log_joint(heads, n, p), resp)

    q_best = q_value(best)
    for _ in range(50):
        theta = np.clip(best.theta + rng.normal(scale=0.02, size=2), 0.01, 0.99)
        w = np.clip(best.weights[0] + rng.normal(scale=0.02), 0.01, 0.99)
        assert q_value(Params(theta, np.array([w, 1 - w]))) < q_best
    # and the gradient of Q with respect to theta vanishes there
    testing.check_gradient(
        lambda t: q_value(Params(t, best.weights)), lambda t: np.zeros(2), best.theta,
        rtol=1e-6,
    )


def test_m_step_formulas():
    resp = np.array([[0.45, 0.55], [0.8, 0.2], [0.73, 0.27], [0.35, 0.65], [0.65, 0.35]])
    p = coins.m_step(HEADS, N_TOSSES, resp)
    np.testing.assert_allclose(p.theta, resp.T @ HEADS / (resp.T @ N_TOSSES), rtol=1e-14)
    np.testing.assert_allclose(p.weights, resp.mean(axis=0), rtol=1e-14)
    fixed = coins.m_step(HEADS, N_TOSSES, resp, estimate_weights=False, weights=[0.3, 0.7])
    np.testing.assert_array_equal(fixed.weights, [0.3, 0.7])
    np.testing.assert_allclose(fixed.theta, p.theta, rtol=1e-15)
    uniform = coins.m_step(HEADS, N_TOSSES, resp, estimate_weights=False)
    np.testing.assert_array_equal(uniform.weights, [0.5, 0.5])


def test_m_step_empty_component_keeps_old_value():
    resp = np.array([[1.0, 0.0]] * 5)
    with pytest.warns(EmptyComponentWarning, match=r"coin\(s\) \[1\] have zero responsibility"):
        p = coins.m_step(HEADS, N_TOSSES, resp, theta_old=[0.6, 0.3])
    assert p.theta[1] == 0.3 and p.weights[1] == 0.0
    assert p.theta[0] == pytest.approx(HEADS.sum() / N_TOSSES.sum(), rel=1e-14)
    with pytest.warns(EmptyComponentWarning, match=r"stays at \[0.5\]"):
        p = coins.m_step(HEADS, N_TOSSES, resp)
    assert p.theta[1] == 0.5


def test_expected_counts_table_of_do_and_batzoglou():
    """Figure 1b of Do and Batzoglou (2008): 21.3 H / 8.6 T for coin A, 11.7 H / 8.4 T for B."""
    resp = coins.e_step(HEADS, N_TOSSES, P0)
    np.testing.assert_allclose(resp[:, 0], [0.45, 0.80, 0.73, 0.35, 0.65], atol=0.005)
    eh, et = coins.expected_counts(HEADS, N_TOSSES, resp)
    np.testing.assert_allclose(eh, [21.3, 11.7], atol=0.05)
    np.testing.assert_allclose(et, [8.6, 8.4], atol=0.05)
    np.testing.assert_allclose(eh + et, resp.T @ N_TOSSES, rtol=1e-14)


# ---------------------------------------------------------------- fit
def test_fit_reproduces_do_and_batzoglou():
    res = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False, max_iter=10)
    assert isinstance(res, em.EMResult) and res.n_iter == 10
    np.testing.assert_allclose(res.thetas[1].theta, [0.71, 0.58], atol=0.005)
    np.testing.assert_allclose(res.thetas[10].theta, [0.80, 0.52], atol=0.005)
    for p in res.thetas:
        np.testing.assert_array_equal(p.weights, [0.5, 0.5])


@pytest.mark.parametrize("estimate_weights", [False, True])
def test_fit_trace(estimate_weights):
    res = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=estimate_weights, tol=1e-12)
    assert res.converged
    testing.assert_monotone(res.log_likelihood, rtol=1e-12)
    res.check_sandwich()
    p = P0
    for i in range(res.n_iter):
        r = coins.e_step(HEADS, N_TOSSES, p)
        p = coins.m_step(HEADS, N_TOSSES, r, estimate_weights=estimate_weights,
                         weights=P0.weights)
        np.testing.assert_allclose(res.thetas[i + 1].theta, p.theta, rtol=1e-13)
        np.testing.assert_allclose(res.thetas[i + 1].weights, p.weights, rtol=1e-13)
        assert res.elbo[i] == pytest.approx(
            bounds.elbo(coins.log_joint(HEADS, N_TOSSES, p), r), rel=1e-13
        )
    for i, p in enumerate(res.thetas):
        assert res.log_likelihood[i] == coins.log_likelihood(HEADS, N_TOSSES, p)


def test_fit_ends_at_a_stationary_point():
    """At EM's fixed point the gradient of ln p(V | theta) with respect to theta is zero."""
    res = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False, tol=1e-14)
    theta = res.theta.theta

    def ll(t):
        return coins.log_likelihood(HEADS, N_TOSSES, Params(t, P0.weights))

    testing.check_gradient(ll, lambda t: np.zeros(2), theta, eps=1e-5, rtol=1e-5)
    assert 0.79 < theta[0] < 0.80 and 0.51 < theta[1] < 0.53


def test_fit_with_unequal_set_sizes_and_three_coins():
    heads = np.array([1, 18, 9, 0, 14, 3, 10])
    n = np.array([10, 20, 15, 5, 20, 12, 11])
    p0 = Params(np.array([0.2, 0.5, 0.8]), np.array([0.3, 0.3, 0.4]))
    res = coins.fit(heads, n, p0)
    assert res.converged
    testing.assert_monotone(res.log_likelihood)
    res.check_sandwich()
    assert res.theta.weights.sum() == pytest.approx(1.0, rel=1e-14)


def test_m_step_does_not_round_theta_to_one():
    """A responsibility of 1e-20 for an all-tails set keeps theta below 1, so L stays finite."""
    heads, n = np.array([0, 12]), 12
    resp = np.array([[1e-20, 1.0 - 1e-20], [1.0, 0.0]])
    p = coins.m_step(heads, n, resp)
    assert p.theta[0] == np.nextafter(1.0, 0.0)
    assert p.theta[1] == 0.0  # no expected heads at all: exactly 0 is the maximiser
    assert np.isfinite(bounds.elbo(coins.log_joint(heads, n, p), resp))
    res = coins.fit(heads, n, Params(np.array([0.5, 0.25]), np.array([0.5, 0.5])),
                    estimate_weights=False)
    res.check_sandwich()


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    theta=st.lists(st.floats(0.02, 0.98), min_size=2, max_size=3),
    estimate_weights=st.booleans(),
)
def test_fit_never_decreases(data, theta, estimate_weights):
    heads = np.array(data)
    k = len(theta)
    p0 = Params(np.array(theta), np.full(k, 1.0 / k))
    res = coins.fit(heads, 12, p0, estimate_weights=estimate_weights, max_iter=30)
    testing.assert_monotone(res.log_likelihood, rtol=1e-11)
    res.check_sandwich(rtol=1e-11)


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("heads", "n_tosses", "exc", "match"),
    [
        ([5, 11], 10, ValueError, "set 1 has more heads than tosses: heads = 11 > n_tosses = 10"),
        ([5, -1], 10, ValueError, "heads must be non-negative, got -1 at index 1"),
        ([5, 2.5], 10, ValueError, "heads must be whole numbers, got 2.5 at index 1"),
        ([5, 2], 9.5, ValueError, "n_tosses must be whole numbers"),
        ([5, 0], [10, 0], ValueError, "n_tosses must be at least 1, got 0 for set 1"),
        ([5, 2], [10, 10, 10], ValueError, "n_tosses must be one number or one per set"),
        ([[5, 2]], 10, ValueError, "heads must be 1-D"),
        ([5, np.nan], 10, ValueError, "heads contains NaN"),
        (["a"], 10, TypeError, "heads must be an array of numbers"),
    ],
)
def test_bad_counts(heads, n_tosses, exc, match):
    for call in (
        lambda: coins.log_joint(heads, n_tosses, P0),
        lambda: coins.fit(heads, n_tosses, P0),
        lambda: coins.m_step(heads, n_tosses, [[0.5, 0.5]] * 2),
    ):
        with pytest.raises(exc, match=match):
            call()


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        (Params(np.array([0.6, 1.2]), np.array([0.5, 0.5])), ValueError,
         r"theta must lie in \[0, 1\], got theta\[1\] = 1.2"),
        (Params(np.array([-0.1, 0.5]), np.array([0.5, 0.5])), ValueError, "theta must lie in"),
        (Params(np.array([0.6, 0.5]), np.array([0.5, 0.6])), ValueError,
         "rows of weights must sum to 1"),
        (Params(np.array([0.6, 0.5]), np.array([1.5, -0.5])), ValueError,
         "weights has a negative probability"),
        (Params(np.array([0.6, 0.5, 0.4]), np.array([0.5, 0.5])), ValueError,
         "theta and weights must have one entry per coin, got 3 and 2"),
        ((np.array([0.6, 0.5]),), TypeError, r"params must be a pair \(theta, weights\)"),
    ],
)
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        coins.log_joint(HEADS, N_TOSSES, params)
    with pytest.raises(exc, match=match):
        coins.fit(HEADS, N_TOSSES, params)


def test_impossible_data_point():
    p = Params(np.array([0.0, 0.0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="data point 0 is impossible"):
        coins.e_step(HEADS, N_TOSSES, p)
    with pytest.raises(ValueError, match="data point 0 is impossible"):
        coins.fit(HEADS, N_TOSSES, p)


def test_bad_resp():
    with pytest.raises(ValueError, match="resp must have one row per set: got 2 rows for 5 sets"):
        coins.m_step(HEADS, N_TOSSES, [[0.5, 0.5]] * 2)
    with pytest.raises(ValueError, match="rows of resp must sum to 1"):
        coins.m_step(HEADS, N_TOSSES, [[0.5, 0.4]] * 5)
    with pytest.raises(ValueError, match="resp must be 2-D"):
        coins.expected_counts(HEADS, N_TOSSES, [0.5, 0.5])
    with pytest.raises(ValueError, match="resp must have one row per set"):
        coins.expected_counts(HEADS, N_TOSSES, [[0.5, 0.5]])
    with pytest.raises(ValueError, match="weights has 3 entries but resp has 2 columns"):
        coins.m_step(HEADS, N_TOSSES, [[0.5, 0.5]] * 5, estimate_weights=False,
                     weights=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="theta_old has 3 entries but resp has 2 columns"):
        coins.m_step(HEADS, N_TOSSES, [[0.5, 0.5]] * 5, theta_old=[0.1, 0.2, 0.3])
