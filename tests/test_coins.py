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
        ([5, -1], 10, ValueError, "heads must be >= 0, got -1 at index 1"),
        ([5, 2.5], 10, ValueError, "heads must hold whole numbers, got 2.5 at index 1"),
        ([5, 2], 9.5, ValueError, "n_tosses must hold whole numbers, got 9.5"),
        ([5, 0], [10, 0], ValueError, "n_tosses must be >= 1, got 0 at index 1"),
        ([5, 2], [10, 10, 10], ValueError, "n_tosses must be one number or one per set"),
        ([[5, 2]], 10, ValueError, "heads must be 1-D"),
        ([5, np.nan], 10, ValueError, "heads contains NaN"),
        (["a"], 10, TypeError, "heads must be an array of numbers"),
        ([5, 2 + 1j], 10, TypeError, "heads must hold real numbers, got complex"),
        ([5, 2], 10 + 0j, TypeError, "n_tosses must hold real numbers, got complex"),
        ([True, False], 10, TypeError, "heads must hold integers, got booleans"),
        ([5, 2], True, TypeError, "n_tosses must hold integers, got booleans"),
        ([5, np.inf], 10, ValueError, "heads contains infinite values"),
        ([5, 2], [[10, 10]], ValueError, "n_tosses must be 0-D or 1-D"),
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
        ((np.array([0.6, 0.5]),), TypeError,
         r"params0? must be a coins.Params or a \(theta, weights\) pair, got tuple of length 1"),
        ({"theta": [0.6, 0.5], "weights": [0.5, 0.5]}, TypeError,
         r"params0? must be a coins.Params or a \(theta, weights\) pair, got a dict with keys "
         r"\['theta', 'weights'\]; use coins.Params\(theta=..., weights=...\)"),
        (0.5, TypeError,
         r"params0? must be a coins.Params or a \(theta, weights\) pair, got float$"),
        ("ab", TypeError, r"params0? must be a coins.Params .* pair, got str"),
        (Params(np.array([0.6, 0.5j]), np.array([0.5, 0.5])), TypeError,
         "theta must hold real numbers, got complex"),
        (Params(np.array([0.6, 0.5]), np.array([0.5, 0.5 + 1e-7])), ValueError,
         r"rows of weights must sum to 1 \(along axis -1\); row 0 sums to 1.0000001, off by 1e-07"),
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


def test_params_as_a_plain_pair():
    """A tuple, a list or a (2, K) array of (theta, weights) is as good as a Params."""
    ref = coins.log_joint(HEADS, N_TOSSES, P0)
    for pair in ((P0.theta, P0.weights), [list(P0.theta), list(P0.weights)], np.stack(P0)):
        np.testing.assert_array_equal(coins.log_joint(HEADS, N_TOSSES, pair), ref)
    res = coins.fit(HEADS, N_TOSSES, ([0.6, 0.5], [0.5, 0.5]), max_iter=3)
    assert isinstance(res.thetas[0], Params)


def test_counts_accept_numpy_integers_and_whole_floats():
    ref = coins.log_joint(HEADS, N_TOSSES, P0)
    for heads, n in ((HEADS.astype(np.int32), np.int64(10)), (HEADS.astype(float), 10.0),
                     (list(HEADS), np.uint8(10))):
        np.testing.assert_array_equal(coins.log_joint(heads, n, P0), ref)


def test_resp_rows_off_by_1e7_report_the_deviation():
    resp = np.full((5, 2), 0.5)
    resp[3, 1] += 1e-7
    with pytest.raises(ValueError, match=r"row 3 sums to 1.0000001, off by 1e-07 \(the tolerance"):
        coins.m_step(HEADS, N_TOSSES, resp)
    with pytest.raises(ValueError, match="row 3 sums to 1.0000001, off by 1e-07"):
        coins.expected_counts(HEADS, N_TOSSES, resp)
    with pytest.raises(ValueError, match="rows of weights must sum to 1.*off by 1e-07"):
        coins.m_step(HEADS, N_TOSSES, np.full((5, 2), 0.5), estimate_weights=False,
                     weights=[0.5, 0.5 + 1e-7])


def test_complex_resp_weights_and_theta_old_are_refused():
    resp = np.full((5, 2), 0.5)
    with pytest.raises(TypeError, match="resp must hold real numbers, got complex"):
        coins.m_step(HEADS, N_TOSSES, resp + 0j)
    with pytest.raises(TypeError, match="weights must hold real numbers, got complex"):
        coins.m_step(HEADS, N_TOSSES, resp, estimate_weights=False, weights=[0.5 + 0j, 0.5])
    with pytest.raises(TypeError, match="theta_old must hold real numbers, got complex"):
        coins.m_step(HEADS, N_TOSSES, resp, theta_old=[0.5j, 0.5])
    with pytest.raises(ValueError, match=r"theta_old must lie in \[0, 1\], got theta_old\[1\]"):
        coins.m_step(HEADS, N_TOSSES, resp, theta_old=[0.5, 1.5])


@pytest.mark.parametrize("seqs", [5, None, 3.5])
def test_from_strings_not_iterable(seqs):
    name = type(seqs).__name__
    with pytest.raises(TypeError, match=f"sequences must be a list of strings.*got {name}"):
        coins.from_strings(seqs)


# ---------------------------------------------------------------- tol = 0, max_iter, decreases
@pytest.mark.parametrize("max_iter", [0, 1, 7, np.int64(40)])
def test_fit_tol_zero_runs_exactly_max_iter(max_iter):
    res = coins.fit(HEADS, N_TOSSES, P0, tol=0, max_iter=max_iter)
    assert res.n_iter == max_iter and not res.converged
    assert len(res.thetas) == max_iter + 1 and res.log_likelihood.shape == (max_iter + 1,)
    assert res.decreases == ()
    # the same iterates as a run with a positive tolerance, as far as that one goes
    ref = coins.fit(HEADS, N_TOSSES, P0, tol=1e-12, max_iter=max_iter)
    np.testing.assert_array_equal(res.log_likelihood[: ref.n_iter + 1], ref.log_likelihood)


def test_fit_tol_zero_keeps_going_after_convergence():
    """Past EM's fixed point, tol=0 runs on without warnings (no spurious decreases)."""
    converged = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False)
    assert converged.converged
    res = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False, tol=0.0,
                    max_iter=converged.n_iter + 50)
    assert res.n_iter == converged.n_iter + 50 and not res.converged
    testing.assert_monotone(res.log_likelihood, rtol=1e-12)


def test_fit_result_carries_decreases_and_repr(monkeypatch):
    """fit returns em.run's result: a decrease made by a broken M-step is on the result."""
    res = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False)
    assert res.decreases == () and "decreases=()" in repr(res)
    assert repr(res).startswith(f"EMResult(n_iter={res.n_iter}, converged=True")

    good_m_step = coins.m_step
    calls = []

    def broken_m_step(*args, **kwargs):  # the second M-step returns to the start
        calls.append(1)
        return P0 if len(calls) == 2 else good_m_step(*args, **kwargs)

    monkeypatch.setattr(coins, "m_step", broken_m_step)
    with pytest.warns(em.LikelihoodDecreaseWarning, match="decreased at iteration 2"):
        bad = coins.fit(HEADS, N_TOSSES, P0, estimate_weights=False, tol=0, max_iter=3)
    assert not bad.converged
    assert [i for i, _ in bad.decreases] == [2]
    drop = bad.log_likelihood[1] - bad.log_likelihood[2]
    assert bad.decreases[0][1] == pytest.approx(drop, rel=1e-12) and drop > 0
    assert f"decreases=((iteration 2: -{drop:.3g}))" in repr(bad)


# ---------------------------------------------------------------- bad scalar arguments
NOT_INTEGERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.complex_numbers(),
    st.just(np.float64(3.0)),
    st.just(np.bool_(True)),
    st.just([3]),
)
NOT_REALS = st.one_of(
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.just(1j),
    st.just([1e-3]),
    st.just(np.array([1e-3])),
    st.just(np.bool_(False)),
)
OUT_OF_RANGE_TOL = st.one_of(
    st.just(np.nan),
    st.just(np.inf),
    st.just(-np.inf),
    st.floats(max_value=-1e-300, allow_nan=False),
)


def _raises_naming(name, call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert name in str(info.value), str(info.value)
    return info.type


@settings(max_examples=60, deadline=None)
@given(value=NOT_INTEGERS)
def test_fit_max_iter_must_be_an_integer(value):
    assert _raises_naming(
        "max_iter", lambda: coins.fit(HEADS, N_TOSSES, P0, max_iter=value)
    ) is TypeError


@settings(max_examples=30, deadline=None)
@given(value=st.integers(max_value=-1))
def test_fit_negative_max_iter(value):
    with pytest.raises(ValueError, match=f"max_iter must be >= 0, got {value}"):
        coins.fit(HEADS, N_TOSSES, P0, max_iter=value)


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(NOT_REALS, OUT_OF_RANGE_TOL))
def test_fit_tol_must_be_a_finite_number_at_least_zero(value):
    _raises_naming("tol", lambda: coins.fit(HEADS, N_TOSSES, P0, tol=value))


@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none()))
def test_estimate_weights_must_be_a_bool(value):
    resp = coins.e_step(HEADS, N_TOSSES, P0)
    for call in (lambda: coins.fit(HEADS, N_TOSSES, P0, estimate_weights=value),
                 lambda: coins.m_step(HEADS, N_TOSSES, resp, estimate_weights=value)):
        assert _raises_naming("estimate_weights", call) is TypeError


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(["heads", "n_tosses"]),
    bad=st.one_of(
        st.just(np.nan), st.just(np.inf), st.just(-1), st.just(2.5), st.just(1j),
        st.just("5"), st.just(True), st.just(None), st.just([1, [2]]),
    ),
)
def test_every_count_function_names_the_bad_count(which, bad):
    """One bad count, anywhere: TypeError or ValueError naming it, never a numpy traceback."""
    heads, n = list(HEADS), 10
    if which == "heads" and bad is True:
        heads = [True, False]  # booleans mixed with integers are integers to numpy
    elif which == "heads":
        heads[1] = bad
    else:
        n = bad
    resp = coins.e_step(HEADS, N_TOSSES, P0)
    for call in (
        lambda: coins.log_joint(heads, n, P0),
        lambda: coins.e_step(heads, n, P0),
        lambda: coins.log_likelihood(heads, n, P0),
        lambda: coins.m_step(heads, n, resp),
        lambda: coins.expected_counts(heads, n, resp),
        lambda: coins.fit(heads, n, P0),
    ):
        _raises_naming(which, call)
