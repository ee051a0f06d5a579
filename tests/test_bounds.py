"""Tests of emtutor.bounds against brute-force enumeration, scipy, and the identities."""

import itertools

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp

from emtutor import bounds

pytestmark = pytest.mark.filterwarnings("error")


# ---------------------------------------------------------------- brute-force enumeration
def enumerate_joint(log_joint):
    """All K**N assignments z of the latent variables and ln p(V, Z = z) for each."""
    n, k = log_joint.shape
    zs = np.array(list(itertools.product(range(k), repeat=n)))
    return zs, log_joint[np.arange(n), zs].sum(axis=1)


def random_problem(rng, n, k, with_neg_inf=False):
    lj = rng.normal(scale=3.0, size=(n, k)) - 2.0
    q = rng.dirichlet(np.ones(k), size=n)
    if with_neg_inf and k > 1:
        lj[0, 0] = -np.inf
        q[0] = np.r_[0.0, rng.dirichlet(np.ones(k - 1))]
    return lj, q


SHAPES = [(1, 1), (1, 3), (2, 2), (3, 2), (4, 3), (3, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_neg_inf", [False, True])
def test_log_likelihood_and_posterior_by_enumeration(shape, with_neg_inf):
    rng = np.random.default_rng(sum(shape) + 10 * with_neg_inf)
    lj, _ = random_problem(rng, *shape, with_neg_inf=with_neg_inf)
    zs, log_pvz = enumerate_joint(lj)
    log_pv = logsumexp(log_pvz)
    assert bounds.log_likelihood(lj) == pytest.approx(log_pv, rel=1e-12, abs=1e-12)
    # posterior marginals p(z_n = k | V) = sum over assignments with z_n = k
    weights = np.exp(log_pvz - log_pv)
    n, k = shape
    marg = np.array([[weights[zs[:, i] == j].sum() for j in range(k)] for i in range(n)])
    np.testing.assert_allclose(bounds.posterior(lj), marg, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_elbo_kl_entropy_q_by_enumeration(shape):
    """With the factorised q(Z) = prod_n q_n(z_n), every quantity summed over all K**N states."""
    rng = np.random.default_rng(100 + sum(shape))
    lj, q = random_problem(rng, *shape)
    zs, log_pvz = enumerate_joint(lj)
    n = shape[0]
    qz = np.prod(q[np.arange(n), zs], axis=1)
    log_pv = logsumexp(log_pvz)
    post_z = np.exp(log_pvz - log_pv)
    elbo = np.sum(qz * (log_pvz - np.log(qz)))
    kl = np.sum(qz * np.log(qz / post_z))
    big_q = np.sum(qz * log_pvz)
    h = -np.sum(qz * np.log(qz))
    assert bounds.elbo(lj, q) == pytest.approx(elbo, rel=1e-12, abs=1e-12)
    assert bounds.expected_complete_loglik(lj, q) == pytest.approx(big_q, rel=1e-12, abs=1e-12)
    assert float(np.sum(bounds.entropy(q))) == pytest.approx(h, rel=1e-12, abs=1e-12)
    d = bounds.decompose(lj, q)
    assert d.kl == pytest.approx(kl, rel=1e-10, abs=1e-12)
    assert d.log_likelihood == pytest.approx(log_pv, rel=1e-12)
    assert d.elbo == pytest.approx(elbo, rel=1e-12, abs=1e-12)


def test_entropy_and_kl_match_scipy():
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.ones(4), size=6)
    p = rng.dirichlet(np.ones(4), size=6)
    q[0, 1:] = 0.0
    q[0, 0] = 1.0
    np.testing.assert_allclose(bounds.entropy(q), scipy.stats.entropy(q, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(
        bounds.kl_divergence(q, p), scipy.stats.entropy(q, p, axis=-1), rtol=1e-12
    )


def test_entropy_shape_and_zero_log_zero():
    q = np.full((2, 3, 4), 0.25)
    assert bounds.entropy(q).shape == (2, 3)
    np.testing.assert_allclose(bounds.entropy(q), np.log(4), rtol=1e-15)
    assert bounds.entropy([1.0, 0.0]) == 0.0
    assert np.ndim(bounds.entropy([0.5, 0.5])) == 0


def test_kl_zero_conventions():
    assert bounds.kl_divergence([0.0, 1.0], [0.5, 0.5]) == pytest.approx(np.log(2), rel=1e-15)
    assert bounds.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert bounds.kl_divergence([1.0, 0.0], [1.0, 0.0]) == 0.0


def test_bound_after_estep_equation():
    """L(q, theta) = Q(theta, theta_old) + H(q) with q the posterior at theta_old."""
    rng = np.random.default_rng(7)
    lj_old, _ = random_problem(rng, 5, 3)
    lj_new, _ = random_problem(rng, 5, 3)
    q = bounds.posterior(lj_old)
    lhs = bounds.elbo(lj_new, q)
    rhs = bounds.expected_complete_loglik(lj_new, q) + float(np.sum(bounds.entropy(q)))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # at theta = theta_old the bound is tight
    assert bounds.elbo(lj_old, q) == pytest.approx(bounds.log_likelihood(lj_old), rel=1e-12)


def test_impossible_states():
    lj = np.array([[-np.inf, np.log(0.2)], [np.log(0.1), np.log(0.3)]])
    post = bounds.posterior(lj)
    assert post[0, 0] == 0.0 and post[0, 1] == 1.0
    assert np.isfinite(bounds.elbo(lj, post))
    q_bad = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert bounds.elbo(lj, q_bad) == -np.inf
    assert bounds.expected_complete_loglik(lj, q_bad) == -np.inf
    d = bounds.decompose(lj, q_bad)
    assert d.elbo == -np.inf and d.kl == np.inf and np.isfinite(d.log_likelihood)


def test_one_dimensional_input_is_one_row():
    lj = np.log([0.1, 0.3])
    q = np.array([0.4, 0.6])
    assert bounds.log_likelihood(lj) == pytest.approx(np.log(0.4), rel=1e-15)
    np.testing.assert_allclose(bounds.posterior(lj), [0.25, 0.75], rtol=1e-15)
    d1 = bounds.decompose(lj, q)
    d2 = bounds.decompose(lj[None, :], q[None, :])
    np.testing.assert_allclose(d1, d2, rtol=1e-15)
    assert d1.log_likelihood == pytest.approx(d1.elbo + d1.kl, rel=1e-14)


def test_large_magnitudes_no_overflow():
    lj = np.array([[-1000.0, -1001.0], [800.0, 799.0]])
    expected = 2 * np.log1p(np.exp(-1.0)) - 200.0
    assert bounds.log_likelihood(lj) == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(bounds.posterior(lj)[:, 0], 1 / (1 + np.exp(-1.0)), rtol=1e-13)


# ---------------------------------------------------------------- property-based tests
@st.composite
def problems(draw, posterior_q=False):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 5))
    lj = draw(arrays(np.float64, (n, k), elements=st.floats(-30.0, 5.0)))
    impossible = draw(arrays(np.bool_, (n, k)))
    impossible[:, 0] = False  # every data point stays possible
    lj = np.where(impossible, -np.inf, lj)
    raw = draw(arrays(np.float64, (n, k), elements=st.floats(0.0, 1.0)))
    raw = np.where(impossible, 0.0, raw)
    raw[:, 0] += 1e-3  # rows never all zero
    return lj, raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=80, deadline=None)
@given(problems())
def test_identity_and_inequalities(problem):
    lj, q = problem
    d = bounds.decompose(lj, q)
    scale = max(1.0, abs(d.log_likelihood))
    assert d.kl >= -1e-12 * scale
    assert d.elbo <= d.log_likelihood + 1e-12 * scale
    assert abs(d.log_likelihood - (d.elbo + d.kl)) <= 1e-10 * scale
    # Pinsker: KL(q_n || p_n) >= 0.5 * ||q_n - p_n||_1^2, so KL > 0 when q differs
    tv = np.abs(q - bounds.posterior(lj)).sum(axis=1)
    assert d.kl >= 0.5 * np.sum(tv**2) - 1e-10 * scale


@settings(max_examples=60, deadline=None)
@given(problems())
def test_bound_is_tight_only_at_the_posterior(problem):
    lj, q = problem
    post = bounds.posterior(lj)
    d = bounds.decompose(lj, post)
    scale = max(1.0, abs(d.log_likelihood))
    assert abs(d.kl) <= 1e-12 * scale
    assert d.elbo == pytest.approx(d.log_likelihood, rel=1e-12, abs=1e-12)
    if np.abs(q - post).sum(axis=1).max() > 0.1:  # clearly different: Pinsker gives KL > 0.005
        assert bounds.decompose(lj, q).kl > 0.005


# ---------------------------------------------------------------- bad inputs
GOOD_LJ = np.log([[0.1, 0.3], [0.2, 0.2]])
GOOD_Q = np.array([[0.5, 0.5], [0.9, 0.1]])


@pytest.mark.parametrize("func", [bounds.log_likelihood, bounds.posterior])
@pytest.mark.parametrize(
    ("lj", "exc", "match"),
    [
        ([[0.0, np.nan]], ValueError, "log_joint contains NaN"),
        ([[0.0, np.inf]], ValueError, "log_joint contains infinite"),
        ([[0.0, 0.0], [-np.inf, -np.inf]], ValueError, "row 1 is -inf for every state"),
        (np.zeros((2, 2, 2)), ValueError, "log_joint must be 1-D or 2-D"),
        (np.zeros((0, 2)), ValueError, "log_joint is empty"),
        ([["a", "b"]], TypeError, "log_joint must be an array of numbers"),
    ],
)
def test_bad_log_joint(func, lj, exc, match):
    with pytest.raises(exc, match=match):
        func(lj)


@pytest.mark.parametrize(
    "func",
    [bounds.elbo, bounds.expected_complete_loglik, bounds.decompose],
)
@pytest.mark.parametrize(
    ("q", "match"),
    [
        ([[0.5, 0.4], [0.5, 0.5]], r"rows of q must sum to 1 .*row 0 sums to 0.9"),
        ([[1.5, -0.5], [0.5, 0.5]], "q has a negative probability"),
        ([[0.5, np.nan], [0.5, 0.5]], "q contains NaN"),
        ([[0.5, 0.5]], r"log_joint and q must have the same shape, got \(2, 2\) and \(1, 2\)"),
        (np.full((2, 2, 1), 0.5), "log_joint and q must have the same shape"),
    ],
)
def test_bad_q(func, q, match):
    with pytest.raises(ValueError, match=match):
        func(GOOD_LJ, q)


def test_bad_log_joint_with_q():
    with pytest.raises(ValueError, match="data point 0 is impossible"):
        bounds.elbo([[-np.inf, -np.inf]], [[0.5, 0.5]])


def test_bad_entropy_and_kl_inputs():
    with pytest.raises(ValueError, match="q must have at least one axis"):
        bounds.entropy(1.0)
    with pytest.raises(ValueError, match="rows of q must sum to 1"):
        bounds.entropy([0.2, 0.2])
    with pytest.raises(ValueError, match="rows of p must sum to 1"):
        bounds.kl_divergence([0.5, 0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="p has a negative probability"):
        bounds.kl_divergence([0.5, 0.5], [1.5, -0.5])
    with pytest.raises(ValueError, match="q and p must have the same shape"):
        bounds.kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5])


# ------------------------------------------------ the KL gap when the posterior underflows
def kl_by_definition(lj: np.ndarray, q: np.ndarray) -> float:
    """sum_n sum_k q_nk (ln q_nk - ln p(z_n = k | v_n)), written out term by term in log space."""
    total = 0.0
    for row, qrow in zip(np.atleast_2d(lj), np.atleast_2d(q), strict=True):
        log_post = row - logsumexp(row)
        pairs = zip(qrow, log_post, strict=True)
        total += sum(qk * (np.log(qk) - lp) for qk, lp in pairs if qk > 0)
    return float(total)


def test_decompose_example_whose_posterior_underflows():
    d = bounds.decompose([[0.0, -800.0, -5.0]], [[0.5, 0.25, 0.25]])
    assert np.isfinite(d.kl)
    assert d.kl == pytest.approx(200.216994577649, rel=1e-12)
    assert d.log_likelihood == pytest.approx(d.elbo + d.kl, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    k=st.integers(2, 6),
    n=st.integers(1, 8),
    spread=st.sampled_from([1.0, 800.0, 1e3, 1e4]),
    offset=st.sampled_from([0.0, -1e3, -1e6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decomposition_holds_whatever_the_spread_of_a_row(k, n, spread, offset, seed):
    rng = np.random.default_rng(seed)
    lj = offset + spread * rng.uniform(-1.0, 0.0, size=(n, k))
    q = rng.dirichlet(np.ones(k), size=n)
    d = bounds.decompose(lj, q)
    assert np.isfinite(d.kl) and d.kl >= 0
    scale = max(1.0, abs(d.log_likelihood))
    assert abs(d.log_likelihood - (d.elbo + d.kl)) <= 1e-10 * scale
    assert d.kl == pytest.approx(kl_by_definition(lj, q), rel=1e-10, abs=1e-10)
    assert bounds.kl_divergence(q, log_p=bounds.log_posterior(lj)).sum() == pytest.approx(
        d.kl, rel=1e-12, abs=1e-12
    )


def test_kl_is_infinite_only_for_truly_impossible_states():
    lj = np.array([[0.0, -np.inf, -1e4]])
    assert np.isfinite(bounds.decompose(lj, [[0.5, 0.0, 0.5]]).kl)
    assert bounds.decompose(lj, [[0.5, 0.5, 0.0]]).kl == np.inf
    assert bounds.kl_divergence([0.5, 0.5], log_p=[0.0, -np.inf]) == np.inf


def test_kl_divergence_needs_exactly_one_of_p_and_log_p():
    with pytest.raises(ValueError, match="exactly one of p"):
        bounds.kl_divergence([0.5, 0.5])
    with pytest.raises(ValueError, match="exactly one of p"):
        bounds.kl_divergence([0.5, 0.5], [0.5, 0.5], log_p=[0.0, 0.0])
    with pytest.raises(ValueError, match="exp\\(log_p\\) must sum to 1"):
        bounds.kl_divergence([0.5, 0.5], log_p=[0.0, 0.0])


def test_complex_and_string_inputs_are_refused():
    with pytest.raises(TypeError, match="log_joint must hold real numbers"):
        bounds.log_likelihood(np.array([[0.0, 1j]]))
    with pytest.raises(TypeError, match="q must be an array of numbers"):
        bounds.entropy([["0.5", "0.5"]])


# ---------------------------------------------------------------- per-row weights (counts)
@pytest.mark.parametrize("with_neg_inf", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_weights_equal_repeating_the_rows(seed, with_neg_inf):
    """Every total with weights w equals the total over np.repeat(rows, w), zeros included."""
    rng = np.random.default_rng(seed)
    lj, q = random_problem(rng, 6, 3, with_neg_inf=with_neg_inf)
    w = rng.integers(0, 4, size=6)
    w[1] = 0
    w[2] = max(w[2], 1)
    lj_r, q_r = np.repeat(lj, w, axis=0), np.repeat(q, w, axis=0)
    p = rng.dirichlet(np.ones(3), size=6)
    pairs = [
        (bounds.log_likelihood(lj, weights=w), bounds.log_likelihood(lj_r)),
        (bounds.elbo(lj, q, weights=w), bounds.elbo(lj_r, q_r)),
        (bounds.expected_complete_loglik(lj, q, weights=w),
         bounds.expected_complete_loglik(lj_r, q_r)),
        (bounds.entropy(q, weights=w), float(bounds.entropy(q_r).sum())),
        (bounds.kl_divergence(q, p, weights=w),
         float(bounds.kl_divergence(q_r, np.repeat(p, w, axis=0)).sum())),
        (bounds.kl_divergence(q, log_p=bounds.log_posterior(lj), weights=w),
         float(bounds.kl_divergence(q_r, log_p=bounds.log_posterior(lj_r)).sum())),
    ]
    pairs += list(zip(bounds.decompose(lj, q, weights=w), bounds.decompose(lj_r, q_r),
                      strict=True))
    for got, want in pairs:
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_fractional_weights_and_unit_weights():
    rng = np.random.default_rng(7)
    lj, q = random_problem(rng, 5, 2)
    ones = np.ones(5)
    assert bounds.elbo(lj, q, weights=ones) == pytest.approx(bounds.elbo(lj, q), rel=1e-14)
    half = bounds.log_likelihood(lj, weights=0.5 * ones)
    assert half == pytest.approx(0.5 * bounds.log_likelihood(lj), rel=1e-14)
    # a single row given as a 1-D array takes one weight
    assert bounds.log_likelihood(lj[0], weights=[3.0]) == pytest.approx(
        3 * logsumexp(lj[0]), rel=1e-14)


def test_zero_weight_drops_an_impossible_row():
    """A row of weight 0 is not in the data set, even when theta makes it impossible."""
    lj = np.array([[0.0, -1.0], [-np.inf, -np.inf], [-2.0, -0.5]])
    q = np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.8]])
    w = np.array([2.0, 0.0, 1.0])
    keep = [0, 0, 2]
    assert bounds.log_likelihood(lj, weights=w) == pytest.approx(
        bounds.log_likelihood(lj[keep]), rel=1e-14)
    d = bounds.decompose(lj, q, weights=w)
    want = bounds.decompose(lj[keep], q[keep])
    assert np.allclose(d, want, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="log_joint row 1 is -inf for every state"):
        bounds.log_likelihood(lj, weights=[2.0, 1e-3, 1.0])


@pytest.mark.parametrize(
    ("weights", "exc", "match"),
    [
        ([1.0, -1.0, 2.0], ValueError, r"weights must be counts >= 0, got weights\[1\] = -1"),
        ([1.0, np.nan, 2.0], ValueError, "weights contains NaN"),
        ([1.0, np.inf, 2.0], ValueError, "weights contains infinite values"),
        ([1.0, 2.0], ValueError,
         r"weights must have shape \(3,\), one count per row of log_joint, got shape \(2,\)"),
        ([[1.0, 2.0, 3.0]], ValueError, r"weights must have shape \(3,\)"),
        (["a", "b", "c"], TypeError, "weights must be an array of numbers"),
    ],
)
def test_bad_weights_are_refused(weights, exc, match):
    lj, q = LJ3, np.full((3, 2), 0.5)
    for call in (
        lambda: bounds.log_likelihood(lj, weights=weights),
        lambda: bounds.elbo(lj, q, weights=weights),
        lambda: bounds.expected_complete_loglik(lj, q, weights=weights),
        lambda: bounds.decompose(lj, q, weights=weights),
    ):
        with pytest.raises(exc, match=match):
            call()
    match_q = match.replace("log_joint", "q")
    with pytest.raises(exc, match=match_q):
        bounds.entropy(q, weights=weights)
    with pytest.raises(exc, match=match_q):
        bounds.kl_divergence(q, q, weights=weights)


LJ3 = np.log([[0.1, 0.3], [0.2, 0.2], [0.05, 0.15]])
