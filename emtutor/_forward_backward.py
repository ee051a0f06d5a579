"""Private numerics of :mod:`emtutor.hmm`: scaled forward-backward and Viterbi recursions.

Which path runs when
--------------------
With numba installed, :mod:`emtutor._compiled` runs the E-step and Viterbi as compiled
loops and comes here only when its scaled vectors fail (then the fallbacks below decide);
without numba, or with ``EMTUTOR_COMPILED=0``, the numpy paths of this module run, and
they are the reference the compiled kernels are tested against.

Every path computes the same posterior (to rounding; the tests force each one on small
problems and compare it with brute-force enumeration, a log-space reference and
hmmlearn). :func:`posterior` (the E-step of :func:`emtutor.hmm.fit`, ``score``,
``predict_proba`` and ``forward_backward``) picks by size, per group of sequences of
similar length:

* **one sequence, ``T K^2 <= 20,000``** (``T`` up to about 2,000 for ``K = 3``, 200 for
  ``K = 10``: homework sizes): :func:`posterior_banded`, the forward and the backward
  recursion as two triangular banded linear systems, each solved by one LAPACK call
  (about 25 numpy calls in all, whatever ``T``);
* **otherwise**: :func:`posterior_blocks` with the block length of :func:`plan_blocks`.
  Long chains with few states (``K = 3``, ``T = 10^5 .. 10^6``) get blocks of a few
  hundred steps (the prefix products below); many states (``K = 50``) or many short
  sequences get a single block: the plain recursion, one product per time step for
  both directions at once (vectorised across the sequences);
* **fallbacks**: if a path's unnormalised vectors leave their safe range (or its block
  boundaries disagree), :func:`posterior_batch` (normalised at every step) takes over,
  and if even its scaled vectors cannot represent the posterior, :func:`_posterior_log`
  (log space).

Viterbi (:func:`emtutor.hmm.viterbi`, ``predict``): one sequence with
``T K^2 log2 T <= 400,000`` (``T`` up to about 4,000 for ``K = 3``) takes
:func:`viterbi_scan` (a max-plus scan, about 30 numpy calls); a few long sequences with
``K <= 16`` :func:`viterbi_long` (the blocked scheme in max-plus algebra); anything else
:func:`viterbi_batch` (one step at a time, vectorised across the sequences).

Layout and scaling
------------------
Arrays are *state-major*: the state index comes first, ``E[k, n, t]`` for sequence ``n`` at
time ``t``, so that every elementwise operation of a recursion step runs over long
contiguous rows (one per state) instead of many rows of length ``K``. The plain recursion
(see below) works *time-major* internally, ``F[t, k, n]``: there the state-major rows would
be strided by ``T`` within a step, while a time-major step is one contiguous (K, N) block
that the recursion reads and writes in place.

The recursions work on *emission factors* ``E[k, n, t] = p(x_t | z_t = k) / s_t`` where the
per-step constant ``s_t = max_k p(x_t | z_t = k)`` has been divided out (its log is added back
to the log-likelihood by the caller). Every step's largest factor is exactly 1, so no emission,
however unlikely (``ln p`` near -1000 or below), underflows the recursions in probability
space. The forward vectors are divided by their sum after every step; those divisors are the
scaling coefficients ``c_t`` of Rabiner (1989) and ``ln p(V) = sum_t ln c_t + sum_t ln s_t``.
The backward vectors are also divided by their sum, and the posteriors are normalised at the
end: ``gamma_t = alpha_t * beta_t / g_t`` with ``g_t = sum_k alpha_t(k) beta_t(k)`` and
``xi_t(i, j) = alpha_{t-1}(i) A_ij E_t(j) beta_t(j) / (c_t g_t)``.

The forward recursion as a product of matrices
----------------------------------------------
In row-vector form ``alpha_t = alpha_{t-1} M_t`` with ``M_t = A diag(E_t)``, and the backward
variables obey ``beta_{t-1} = M_t beta_t``: both are running products of the same ``T - 1``
small matrices. Written as a loop over ``t`` in numpy, each step costs several microseconds
of interpreter overhead for a few dozen flops; for ``T = 100,000`` that overhead is all the
time.

The blocked scheme removes it. The ``T - 1`` steps are cut into ``C`` blocks of ``L`` steps
(``L`` a few hundred at most, ``C L >= T - 1``) and the loops below run over ``L`` positions
or ``log2 C`` rounds, each iteration vectorised across all blocks (and all sequences):

1. *Block transfer matrices* ``P_c = M_{s+1} ... M_{s+L}``. Starting from the identity, for
   ``l = 1, ..., L`` every block multiplies its running product by its ``l``-th matrix. The
   ``K`` rows of all ``C`` products are pushed through at once: one step is one product of
   ``A^T`` with a ``(K, K * C)`` array, one broadcast multiplication by the emission factors,
   and a division of every row by its sum. The divisors are kept (their running product,
   moved into a log before it can underflow), so rows never underflow, even with
   structural zeros in ``A`` (a row that becomes exactly zero stays zero, and its scale
   does not matter).
2. *Block boundaries.* The forward vector entering block ``c`` is
   ``alpha_0 P_0 P_1 ... P_{c-1}`` and the backward vector leaving it is
   ``P_{c+1} ... P_{C-1} 1``: running products of the transfer matrices, from the left and
   from the right, so the same matrices serve both directions. They are formed by doubling
   (Hillis-Steele scan): ``ceil(log2 C)`` rounds, each one batch of ``C`` small matrix
   products, instead of a loop over the blocks. Rows stay normalised with their log scales
   kept; when re-weighting rows by their scales underflows a whole row (possible only with
   extreme evidence and structural zeros), that row is recomputed in log space.
3. *Inside the blocks.* Knowing every block's entry vector, the ordinary scaled recursion
   runs for ``L`` steps on all blocks at once, forward and backward (one ``(K, K) @ (K, C)``
   product per step). The forward divisors are exactly the ``c_t`` above, because every
   block starts from the true normalised forward vector.

All quantities are non-negative, so regrouping the products changes only rounding (about
``1e-15`` relative). Phase 1 does ``K`` times the flops of a plain pass, which pays for small
``K`` and long sequences; for large ``K``, or for many short sequences (where vectorising
each time step across sequences already removes the overhead), the plain recursion
(``C = 1``: phase 3 only) is used. :func:`plan_blocks` makes that choice with a rough cost
model (:func:`_plan` for the per-step normalised fallback :func:`posterior_batch`).

:func:`posterior_blocks` (the E-step) and :func:`posterior_batch` (its fallback) differ in
bookkeeping, not in the scheme: the former runs the forward and the backward recursion in
one matrix product per step (``[[A^T, 0], [0, A]]`` applied to the stacked vectors),
normalises only every 32 steps and checks that the boundaries of phase 2 agree with the
recursion of phase 3; the latter normalises after every step and keeps per-row scales in
phase 2, which makes it robust to the extreme cases described below.

Several sequences are padded to a common length with emission factors equal to 1 *after*
their end. Padding at the end leaves every forward variable of the real steps untouched, and
the backward vector at a sequence's last real step becomes ``A^p 1 = 1`` (rows of ``A`` sum
to 1), its correct value, so no masking is needed inside the recursions.

Limits of probability space and the fallback
--------------------------------------------
Normalised forward and backward vectors can still lose an entry to underflow when one state
is ``e^{-745}`` times less likely than another *given the past* (forward) or *given the
future* (backward). With a transition matrix that mixes this cannot persist, but with
structural zeros (absorbing or left-to-right chains) evidence can pile up over many steps,
and if the past and the future contradict each other by more than about 700 nats each, the
state that carries the posterior mass may have underflowed in both vectors. This is
detected (``sum_k alpha_t(k) beta_t(k)`` vanishes) and the affected group of sequences is
recomputed by :func:`_posterior_log`, a plain log-space recursion: slow, but exact.

Even an exact posterior in probability space loses its tiny entries: a state whose log
emission at a step is more than about 745 below the best one has a posterior probability
that underflows to 0, although its logarithm is finite. A divergence ``KL(q || p)`` needs
``ln p`` wherever ``q`` has mass, so :func:`log_marginals` computes the logs of the posterior
marginals in log space throughout (for :func:`emtutor.hmm.kl_to_posterior`, not the E-step).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.linalg.lapack import dtbtrs as _dtbtrs
from scipy.special import logsumexp

_SMALL = 1e-250  # below this a re-weighted sum is recomputed in log space
_FLUSH = 1e-280  # a running product of divisors below this is moved into its log
_G_MIN = 1e-300  # smallest acceptable sum_k alpha_t(k) beta_t(k) before falling back

_IMPOSSIBLE = (
    "the observations have probability zero under these parameters (every path is "
    "ruled out by a zero start, transition or emission probability)"
)


def _plan(n_chains: int, n_steps: int, n_states: int) -> tuple[int, int]:
    """Choose the block length ``L`` and number of blocks ``C`` (``C * L >= n_steps``).

    Rough cost model in microseconds: every numpy call costs a fixed interpreter overhead
    and every element it touches a little more. The plain recursion takes ``2 n_steps``
    steps of about 5 calls on ``N K`` numbers; the blocked one ``L`` steps of 7 calls on
    ``N C K^2`` numbers (phase 1), ``2 L`` steps of 5 calls on ``N C K`` numbers (phase 3)
    and ``2 ceil(log2 C)`` rounds of about 15 calls on ``N C K^2`` numbers (phase 2).
    """
    call, element = 2.5, 0.0015
    N, K = n_chains, n_states
    plain = 2 * n_steps * 5 * (call + N * K * element)
    best = (plain, n_steps, 1)
    if n_steps >= 64:
        for L in range(8, int(math.sqrt(n_steps)) + 2, 4):
            C = -(-n_steps // L)
            cost = (7 * L * (call + N * C * K * K * (1.0 + K / 8.0) * element)
                    + 10 * L * (call + N * C * K * element)
                    + 30 * math.ceil(math.log2(C)) * (call + N * C * K * K * element))
            if cost < best[0]:
                best = (cost, L, C)
    return best[1], best[2]


def _propagate(V, F, M, *, backward: bool, out=None, norms=None, log_total=None):
    """Push ``S`` column vectors per chain through ``L`` steps, normalising after each step.

    Parameters
    ----------
    V : ndarray, shape (K, S, n)
        Start vectors, ``S`` of them for each of ``n`` chains (not modified).
    F : ndarray, shape (L, K, n)
        Emission factors; step ``l`` of chain ``i`` uses ``F[l, :, i]``.
    M : ndarray, shape (K, K)
        ``A.T`` forward (``v <- (A^T v) * f``), ``A`` backward (``v <- A (f * v)``, steps
        taken in reverse order).
    out : ndarray, shape (L, K, n), optional
        Only for ``S == 1``: receives the normalised vector after every step.
    norms : ndarray, shape (L, S, n), optional
        Receives every step's divisor (the sum of the vector).
    log_total : ndarray, shape (S * n,), optional
        Incremented by the sum of the logs of the divisors. The divisors are multiplied
        together and the log taken only when the product gets small, so that a pass costs
        a handful of logarithms rather than one per step.

    Returns
    -------
    ndarray, shape (K, S, n)
        The normalised vectors after the last step. A vector that becomes exactly zero
        turns into NaN (0 / 0) and stays NaN; its divisors are 0 and then NaN.
    """
    L, K, n = F.shape
    S = V.shape[1]
    ones = np.ones(K)
    cur = np.array(V, dtype=float).reshape(K, S * n)
    spare = np.empty_like(cur)
    tmp = np.empty_like(cur) if backward else None
    scratch = np.empty(S * n)
    product = np.ones(S * n) if log_total is not None else None
    with np.errstate(invalid="ignore", divide="ignore"):
        for l in range(L - 1, -1, -1) if backward else range(L):
            dst = spare if out is None else out[l]
            if S == 1:
                if backward:
                    np.multiply(cur, F[l], out=tmp)
                    np.matmul(M, tmp, out=dst)
                else:
                    np.matmul(M, cur, out=dst)
                    dst *= F[l]
            elif backward:
                np.multiply(cur.reshape(K, S, n), F[l][:, None, :], out=tmp.reshape(K, S, n))
                np.matmul(M, tmp, out=dst)
            else:
                np.matmul(M, cur, out=dst)
                dst3 = dst.reshape(K, S, n)
                dst3 *= F[l][:, None, :]
            nrm = scratch if norms is None else norms[l].reshape(S * n)
            np.matmul(ones, dst, out=nrm)
            dst /= nrm
            if product is not None:
                product *= nrm
                if product.min() < _FLUSH:  # move the product into the log before it underflows
                    log_total += np.log(product)
                    product[:] = 1.0
            if out is None:
                cur, spare = dst, cur
            else:
                cur = dst
        if product is not None:
            log_total += np.log(product)
    return cur.reshape(K, S, n)


def _transfer_matrices(F, A, n_seq: int):
    """Phase 1: normalised block transfer matrices and the log scale of each of their rows.

    Returns ``R`` of shape (K, K, N, C) with ``R[i, :, n, c]`` the row ``e_i P_c`` divided by its
    sum (zero if that row is zero) and ``log_scale`` of shape (N, C, K) with the log of those
    sums (``-inf`` for a zero row), relative to the largest one of each block; shape (K, N, C).
    """
    L, K, NC = F.shape
    basis = np.broadcast_to(np.eye(K)[:, :, None], (K, K, NC))
    log_scale = np.zeros(K * NC)
    R = _propagate(basis, F, A.T, backward=False, log_total=log_scale)
    # R[j, i, b] = (e_i P_b)_j / sum_j (e_i P_b)_j
    log_scale = log_scale.reshape(K, NC)
    dead = np.isnan(R[0])  # rows that became exactly zero (0 / 0 at some step)
    if np.any(dead):
        R[:, dead] = 0.0
        log_scale[dead] = -np.inf
    R = R.transpose(1, 0, 2).reshape(K, K, n_seq, NC // n_seq)  # R[i, j, n, c]
    return np.ascontiguousarray(R), _relative(log_scale.reshape(K, n_seq, NC // n_seq))


def _combine(R1, ls1, R2, ls2):
    """Product of two batches of block transfers, each row-normalised with row log scales.

    Arrays are state-major: ``R[i, j, ...]`` and ``ls[i, ...]`` with the batch axes last,
    so every operation runs over long contiguous rows. ``(R1, ls1)`` stands for
    ``diag(exp(ls1)) R1`` and ``(R2, ls2)`` for the block after it. The product
    ``diag(exp(ls1)) R1 diag(exp(ls2 - top)) R2 * exp(top)`` (``top = max(ls2)``) is returned
    with its rows normalised again. A row whose sum falls below ``_SMALL`` may have lost its
    mass to the re-weighting ``exp(ls2 - top)`` underflowing; such rows (rare: structural
    zeros and extreme evidence) are recomputed in log space.
    """
    top = ls2.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    R2w = np.exp(ls2 - top)[:, None] * R2
    M = (R1[:, :, None] * R2w[None]).sum(axis=1)  # M[i, j] = sum_k R1[i, k] R2w[k, j]
    s = M.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = ls1 + top + np.log(s)
        M /= np.where(s > 0, s, 1.0)[:, None]  # a zero row stays zero
    risky = (s < _SMALL) & np.isfinite(ls1)
    if np.any(risky):
        i, *batch = np.nonzero(risky)
        batch = tuple(batch)
        r1 = R1[(i, slice(None), *batch)]  # (n_risky, K): the rows concerned
        l2 = ls2[(slice(None), *batch)].T  # (n_risky, K)
        r2 = np.moveaxis(R2[(slice(None), slice(None), *batch)], -1, 0)  # (n_risky, K, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            lm = logsumexp(np.log(r1)[:, :, None] + l2[:, :, None] + np.log(r2), axis=1)
            mx = lm.max(axis=1, keepdims=True)
            rows = np.exp(lm - np.where(np.isfinite(mx), mx, 0.0))
            tot = rows.sum(axis=1, keepdims=True)
            ls[(i, *batch)] = (ls1[(i, *batch)][:, None] + mx + np.log(tot))[:, 0]
            M[(i, slice(None), *batch)] = np.where(tot > 0, rows / tot, 0.0)
    return M, _relative(ls)


def _relative(ls):
    """Log row scales relative to the largest row of each matrix (axis 0 indexes the rows).

    Only ratios between rows matter (every vector is normalised afterwards); keeping the
    scales near 0 instead of letting them grow like ``T`` keeps their rounding errors small.
    """
    top = ls.max(axis=0)
    return ls - np.where(np.isfinite(top), top, 0.0)


def _scan(R, ls, *, reverse: bool):
    """Running products of the block transfers along the last axis, by doubling.

    ``R`` is (K, K, N, C) and ``ls`` (K, N, C). Forward (``reverse=False``) entry ``c``
    becomes ``P_0 P_1 ... P_c``; reverse, entry ``c`` becomes ``P_c P_{c+1} ... P_{C-1}``.
    ``ceil(log2 C)`` rounds of vectorised products (Hillis-Steele scan) replace a loop over
    the ``C`` blocks.
    """
    R, ls = R.copy(), ls.copy()
    C = R.shape[-1]
    d = 1
    while d < C:
        lo, hi = (slice(None, -d), slice(d, None))
        new = _combine(R[..., lo], ls[..., lo], R[..., hi], ls[..., hi])
        if reverse:  # entry c covers blocks c .. c+d-1; append the d blocks after it
            R[..., lo], ls[..., lo] = new
        else:  # entry c covers blocks c-d+1 .. c; prepend the d blocks before it
            R[..., hi], ls[..., hi] = new
        d *= 2
    return R, ls


def _boundaries(alpha0, R, log_scale):
    """Phase 2: forward vectors entering each block and backward vectors leaving each block.

    Parameters
    ----------
    alpha0 : ndarray, shape (K, N)
        Normalised forward vectors at time 0.
    R, log_scale : ndarray, shapes (K, K, N, C) and (K, N, C)
        Block transfers from :func:`_transfer_matrices` (``R[i, j, n, c]``).

    Returns
    -------
    f_start, b_end : ndarray, shape (K, N, C)
        The normalised ``alpha`` at the start of every block (``alpha0 P_0 ... P_{c-1}``)
        and the normalised ``beta`` at its end (``P_{c+1} ... P_{C-1} 1``).
    """
    K, _, N, C = R.shape
    f_start = np.empty((K, N, C))
    b_end = np.empty((K, N, C))
    f_start[:, :, 0] = alpha0
    b_end[:, :, C - 1] = 1.0 / K
    with np.errstate(divide="ignore", invalid="ignore"):
        Rp, lp = _scan(R[..., :-1], log_scale[..., :-1], reverse=False)
        # sum_i alpha0_i exp(lp_i) Rp_i, weighted relative to the largest term so that the
        # result cannot underflow (that term's row sums to 1)
        lw = np.log(alpha0)[:, :, None] + lp
        w = np.exp(lw - lw.max(axis=0))
        v = (w[:, None] * Rp).sum(axis=0)
        f_start[:, :, 1:] = v / v.sum(axis=0)
        _, ls = _scan(R[..., 1:], log_scale[..., 1:], reverse=True)
        # the suffix product applied to the vector of ones is exp(ls): rows of R sum to 1
        u = np.exp(ls - ls.max(axis=0))
        b_end[:, :, :-1] = u / u.sum(axis=0)
    return f_start, b_end


def _buffer(ws, name: str, shape: tuple) -> np.ndarray:
    """An uninitialised array of ``shape``, reused from the workspace dict ``ws`` if possible.

    Allocating tens of megabytes afresh in every E-step costs page faults (the memory goes
    back to the system between iterations); :func:`emtutor.hmm.fit` keeps one workspace for
    the whole run instead.
    """
    if ws is None:
        return np.empty(shape)
    a = ws.get(name)
    if a is None or a.shape != shape:
        a = ws[name] = np.empty(shape)
    return a


def posterior_batch(startprob, transmat, E, lengths=None, log_E=None, pairwise=False,
                    ws=None):
    """Forward-backward for ``N`` sequences padded to a common length ``T``.

    If the scaled recursions cannot represent the answer (a forward or backward vector whose
    relevant entries underflowed, which needs a transition matrix with structural zeros and
    evidence of more than about 700 nats on both sides of a time step), the group is redone
    in log space by :func:`_posterior_log` when ``log_E`` is given.

    Parameters
    ----------
    startprob : ndarray, shape (K,)
    transmat : ndarray, shape (K, K)
    E : ndarray, shape (K, N, T)
        Emission factors (largest entry of each step 1); entries after a sequence's end
        must be 1.
    lengths : ndarray of int, shape (N,), optional
        True lengths; ``None`` means all equal ``T``.
    log_E : callable, optional
        Returns the (K, N, T) log emissions (0 after a sequence's end), for the fallback.
    pairwise : bool
        Return the two-slice marginals of every step instead of their sum.
    ws : dict, optional
        Workspace whose arrays are reused between calls (the returned ``gamma`` is one of
        them, so it is overwritten by the next call with the same workspace).

    Returns
    -------
    gamma : ndarray, shape (K, N, T)
        Posterior marginals (columns after a sequence's end are meaningless).
    xi : ndarray, shape (K, K), or (N, T - 1, K, K) if ``pairwise``
        Expected transition counts summed over steps and sequences, or
        ``xi[n, t - 1, i, j] = p(z_{t-1} = i, z_t = j | V_n)``.
    log_c : ndarray, shape (N,)
        ``sum_t ln c_t`` over each sequence's real steps (log-likelihood minus the shifts).
    """
    K, N, T = E.shape
    A = transmat
    n_steps = T - 1
    L, C = _plan(N, n_steps, K) if n_steps else (0, 1)
    if C == 1:
        return _posterior_plain(startprob, A, E, lengths, log_E, pairwise, ws)
    alpha = _buffer(ws, "alpha", (K, N, T))
    beta = _buffer(ws, "beta", (K, N, T))
    a0 = startprob[:, None] * E[:, :, 0]
    c0 = a0.sum(axis=0)
    if np.any(c0 <= 0):
        return _fallback(startprob, A, log_E, lengths, pairwise)
    alpha[:, :, 0] = a0 / c0
    log_c = np.log(c0)
    beta[:, :, T - 1] = 1.0
    if n_steps:
        padded = C * L
        # Emission factors of steps 1..T-1 as F[l, k, n*C + c] (step c*L + l + 1 of
        # sequence n), padded with ones up to C*L steps.
        Ep = _buffer(ws, "Ep", (K, N, padded))
        Ep[:, :, :n_steps] = E[:, :, 1:]
        Ep[:, :, n_steps:] = 1.0
        F = _buffer(ws, "F", (L, K, N, C))
        F[...] = Ep.reshape(K, N, C, L).transpose(3, 0, 1, 2)
        F = F.reshape(L, K, N * C)
        R, log_scale = _transfer_matrices(F, A, N)
        f_start, b_end = _boundaries(alpha[:, :, 0], R, log_scale)
        del R
        out = _buffer(ws, "out", (L, K, N * C))
        norms = _buffer(ws, "norms", (L, 1, N * C))
        log_tot = np.zeros(N * C)
        _propagate(f_start.reshape(K, 1, N * C), F, A.T, backward=False, out=out, norms=norms,
                   log_total=log_tot)
        # out[l, :, n*C + c] is alpha at time c*L + l + 1
        alpha[:, :, 1:] = out.reshape(L, K, N, C).transpose(1, 2, 3, 0).reshape(
            K, N, padded)[:, :, :n_steps]
        c_all = norms.reshape(L, N, C).transpose(1, 2, 0).reshape(N, padded)
        c = c_all[:, :n_steps]
        _propagate(b_end.reshape(K, 1, N * C), F, A, backward=True, out=out)
        # out[l, :, n*C + c] is beta at time c*L + l
        beta[:, :, :n_steps] = out.reshape(L, K, N, C).transpose(1, 2, 3, 0).reshape(
            K, N, padded)[:, :, :n_steps]
        del out, F
        # ln prod_t c_t over all steps, minus the padding steps (whose c_t are 1 up to
        # rounding and to how exactly the rows of A sum to 1).
        log_c = log_c + log_tot.reshape(N, C).sum(axis=1)
        last = np.full(N, n_steps) if lengths is None else lengths - 1
        pad = np.arange(padded)[None, :] >= last[:, None]
        if np.any(pad):
            rows = np.nonzero(pad)[0]
            with np.errstate(divide="ignore"):
                log_c = log_c - np.bincount(rows, weights=np.log(c_all[pad]), minlength=N)
    gamma = np.multiply(alpha, beta, out=_buffer(ws, "gamma", (K, N, T)))
    g = np.ones(K) @ gamma.reshape(K, N * T)
    g = g.reshape(N, T)
    real = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    # g_t = sum_k alpha_t(k) beta_t(k) > 1e-300 unless the posterior mass sits where the
    # scaled vectors lost it to underflow (or the data are impossible, NaN from 0 / 0).
    ok = (g > _G_MIN) if real is None else ((g > _G_MIN) | ~real)
    if not np.all(ok) or not np.all(np.isfinite(log_c)):
        return _fallback(startprob, A, log_E, lengths, pairwise)
    gamma /= g
    U = _buffer(ws, "U", (K, N, T))
    U[:, :, T - 1] = 0.0
    if n_steps:
        np.multiply(E[:, :, 1:], beta[:, :, 1:], out=U[:, :, :-1])
        scale = c * g[:, 1:]
        if real is not None:
            scale = np.where(real[:, 1:], scale, np.inf)
        U[:, :, :-1] /= scale
    # xi_{t+1}(i, j) = alpha_t(i) A_ij U[j, n, t]
    if pairwise:
        xi = np.einsum("int,ij,jnt->ntij", alpha[:, :, :-1], A, U[:, :, :-1])
    else:
        xi = A * np.einsum("it,jt->ij", alpha.reshape(K, -1), U.reshape(K, -1))
    return gamma, xi, log_c


def _posterior_plain(startprob, A, E, lengths, log_E, pairwise, ws):
    """:func:`posterior_batch` for the plain recursion (``C = 1``), same arguments and results.

    The work is done *time-major*: every per-step array is laid out (T, K, N), so the slice
    of step ``t`` is one contiguous (K, N) block. The recursions read and write those
    slices in place (``_propagate`` fills ``alpha[1:]`` and ``beta[:-1]`` directly) and
    the posteriors and pairwise terms are formed on the same layout; the only transposed
    copies are the emission factors on the way in and ``gamma`` on the way out.
    """
    K, N, T = E.shape
    F = _buffer(ws, "F", (T, K, N))
    F[...] = E.transpose(2, 0, 1)
    gamma_tm, xi, log_c = posterior_time_major(startprob, A, F, lengths, pairwise, ws)
    if gamma_tm is None:
        return _fallback(startprob, A, log_E, lengths, pairwise)
    gamma = _buffer(ws, "gamma", (K, N, T))
    gamma[...] = gamma_tm.transpose(1, 2, 0)
    return gamma, xi, log_c


def posterior_time_major(startprob, A, F, lengths=None, pairwise=False, ws=None):
    """Plain scaled forward-backward on time-major emission factors ``F`` (T, K, N).

    Same recursions as the plain path of :func:`posterior_batch` (``F[t, :, n]`` holds the
    factors of step ``t`` of sequence ``n``; entries after a sequence's end must be 1), and
    the same results except that ``gamma`` is time-major, (T, K, N). Returns
    ``(None, None, None)`` when the scaled recursions cannot represent the answer; the
    caller then falls back to log space.
    """
    T, K, N = F.shape
    n_steps = T - 1
    alpha = _buffer(ws, "alpha_tm", (T, K, N))
    beta = _buffer(ws, "beta_tm", (T, K, N))
    a0 = startprob[:, None] * F[0]
    c0 = a0.sum(axis=0)
    if np.any(c0 <= 0):
        return None, None, None
    np.divide(a0, c0, out=alpha[0])
    log_c = np.log(c0)
    beta[T - 1] = 1.0
    if n_steps:
        # alpha[t] and beta[t] are contiguous (K, N) slices: the recursions write them in place
        norms = _buffer(ws, "norms_tm", (n_steps, 1, N))
        log_tot = np.zeros(N)
        _propagate(alpha[0].reshape(K, 1, N), F[1:], A.T, backward=False, out=alpha[1:],
                   norms=norms, log_total=log_tot)
        _propagate(np.ones((K, 1, N)), F[1:], A, backward=True, out=beta[:-1])
        c = norms.reshape(n_steps, N)  # c[t - 1, n]: the divisor c_t of step t
        log_c += log_tot
        if lengths is not None:
            # take out the padding steps (c_t = 1 up to rounding) after each sequence's end
            pad = np.arange(1, T)[:, None] >= lengths[None, :]
            if np.any(pad):
                with np.errstate(divide="ignore"):
                    log_c -= np.log(np.where(pad, c, 1.0)).sum(axis=0)
    gamma = np.multiply(alpha, beta, out=_buffer(ws, "gamma_tm", (T, K, N)))
    g = np.ones(K) @ gamma  # (T, N): g_t = sum_k alpha_t(k) beta_t(k)
    real = None if lengths is None else np.arange(T)[:, None] < lengths[None, :]
    ok = (g > _G_MIN) if real is None else ((g > _G_MIN) | ~real)
    if not np.all(ok) or not np.all(np.isfinite(log_c)):
        return None, None, None
    gamma /= g[:, None, :]
    if not n_steps:
        xi = np.zeros((N, 0, K, K)) if pairwise else np.zeros((K, K))
        return gamma, xi, log_c
    # U[t - 1, j, n] = E_t(j) beta_t(j) / (c_t g_t), and
    # xi_t(i, j) = alpha_{t-1}(i) A_ij U[t - 1, j, n]
    U = np.multiply(F[1:], beta[1:], out=_buffer(ws, "U_tm", (n_steps, K, N)))
    scale = c * g[1:]
    if real is not None:
        scale = np.where(real[1:], scale, np.inf)
    U /= scale[:, None, :]
    if pairwise:
        xi = np.einsum("tin,ij,tjn->ntij", alpha[:-1], A, U)
    else:
        # one (K, N) @ (N, K) product per step, summed over the steps
        xi = A * np.matmul(alpha[:-1], U.transpose(0, 2, 1)).sum(axis=0)
    return gamma, xi, log_c


def _fallback(startprob, A, log_E, lengths, pairwise):
    if log_E is None:
        raise ValueError(_IMPOSSIBLE)
    log_e = log_E()
    with np.errstate(divide="ignore"):
        gamma, xi, ll = _posterior_log(np.log(startprob), np.log(A), log_e, lengths, pairwise)
    # like posterior_batch, report ln p minus the per-step shifts max_k ln p(x_t | z_t = k)
    return gamma, xi, ll - log_e.max(axis=0).sum(axis=1)


def _posterior_log(log_startprob, log_A, log_E, lengths=None, pairwise=False):
    """Forward-backward in log space, one time step at a time (vectorised over sequences).

    Slow (a ``logsumexp`` per step) but free of underflow; used only when the scaled
    recursions cannot represent the posterior. Same arguments and results as
    :func:`posterior_batch`, except that ``log_E`` is the (K, N, T) array itself.
    """
    K, N, T = log_E.shape
    lE = np.ascontiguousarray(log_E.transpose(2, 1, 0))  # (T, N, K)
    la = np.empty((T, N, K))
    lb = np.zeros((T, N, K))
    with np.errstate(divide="ignore", invalid="ignore"):
        la[0] = log_startprob + lE[0]
        for t in range(1, T):
            la[t] = logsumexp(la[t - 1][:, :, None] + log_A, axis=1) + lE[t]
        for t in range(T - 2, -1, -1):
            lb[t] = logsumexp(log_A + (lE[t + 1] + lb[t + 1])[:, None, :], axis=2)
        ends = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
        ll = logsumexp(la[ends, np.arange(N)], axis=1)
        if not np.all(np.isfinite(ll)):
            raise ValueError(_IMPOSSIBLE)
        gamma = np.exp(la + lb - ll[:, None]).transpose(2, 1, 0)
        pair = (la[:-1, :, :, None] + log_A + (lE[1:] + lb[1:])[:, :, None, :]
                - ll[:, None, None])  # (T - 1, N, K, K)
        xi = np.exp(pair)
    if lengths is not None:
        xi *= (np.arange(1, T)[:, None] < np.asarray(lengths)[None, :])[:, :, None, None]
    xi = xi.transpose(1, 0, 2, 3) if pairwise else xi.sum(axis=(0, 1))
    return np.ascontiguousarray(gamma), xi, ll


def log_marginals(log_startprob, log_A, log_E):
    """Logs of the posterior marginals of one sequence, computed in log space throughout.

    Where a time step's log emissions differ by more than about 745, the posterior
    probabilities of the unlikely states underflow to 0 (in the scaled recursions and in
    any probability-space answer), although their logarithms are finite. A divergence
    ``KL(q || p)`` needs those logarithms wherever ``q`` puts mass, so this function keeps
    everything in log space: the forward and backward variables are log vectors, shifted
    after every step so that their largest entry is 0 (the shifts cancel in the
    normalisations below), and each step's ``logsumexp`` is taken relative to the largest
    term of each sum. ``-inf`` then marks exactly the states and pairs that the posterior
    rules out (a zero start, transition or emission probability, or no possible path
    through them).

    Slow next to the scaled recursions (a dozen numpy calls per time step and direction in a
    Python loop, a few tens of us per time step in all), which is why the E-step of
    :func:`emtutor.hmm.fit` does not use it.

    Parameters
    ----------
    log_startprob : ndarray, shape (K,)
    log_A : ndarray, shape (K, K)
    log_E : ndarray, shape (T, K)
        Log emissions; no row may be ``-inf`` everywhere.

    Returns
    -------
    log_gamma : ndarray, shape (T, K)
        ``ln p(z_t = k | V)``.
    log_xi : ndarray, shape (T - 1, K, K)
        ``ln p(z_{t-1} = i, z_t = j | V)`` for ``t = 1, ..., T - 1``.

    Raises
    ------
    ValueError
        If the observations are impossible under the model.

    Examples
    --------
    Two states that never switch; the second step's evidence favours state 0 by 2000 nats,
    so the posterior of state 1 is ``e^-2000``, 0 in floating point, but not its log:

    >>> import numpy as np
    >>> never_switch = np.array([[0.0, -np.inf], [-np.inf, 0.0]])  # ln of the identity
    >>> lg, lx = log_marginals(np.log([0.5, 0.5]), never_switch,
    ...                        np.array([[0.0, 0.0], [0.0, -2000.0]]))
    >>> print(lg)
    [[    0. -2000.]
     [    0. -2000.]]
    >>> print(lx[0])
    [[    0.  -inf]
     [ -inf -2000.]]
    """
    T, K = log_E.shape
    shift = log_E.max(axis=1, keepdims=True)
    if np.any(shift == -np.inf):
        raise ValueError(_IMPOSSIBLE)
    lE = log_E - shift  # every step's largest entry 0
    la = np.empty((T, K))
    lb = np.empty((T, K))
    s = np.empty((K, K))
    m, v, w = np.empty(K), np.empty(K), np.empty(K)
    log_AT = np.ascontiguousarray(log_A.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.add(log_startprob, lE[0], out=la[0])
        top = la[0].max()
        if top == -np.inf:
            raise ValueError(_IMPOSSIBLE)
        la[0] -= top
        # Each step: v_j = ln sum_i exp(s_ji) with s_ji = la_{t-1}(i) + ln A_ij, taken relative
        # to m_j = max_i s_ji; a column without a possible term has m_j = -inf, replaced by
        # a finite -1e300 so that it gives ln 0 = -inf instead of NaN.
        def row_logsumexp(s: np.ndarray, out: np.ndarray) -> None:
            """``out_j = ln sum_i exp(s_ji)`` in place, -inf for a row without a term."""
            s.max(axis=1, out=m)
            np.maximum(m, -1e300, out=m)
            s -= m[:, None]
            np.exp(s, out=s)
            s.sum(axis=1, out=out)
            np.log(out, out=out)
            out += m

        for t in range(1, T):
            np.add(la[t - 1], log_AT, out=s)
            row_logsumexp(s, v)
            v += lE[t]
            top = v.max()
            if top == -np.inf:
                raise ValueError(_IMPOSSIBLE)
            np.subtract(v, top, out=la[t])
        lb[T - 1] = 0.0
        for t in range(T - 2, -1, -1):  # the same with s_ij = ln A_ij + lE_{t+1}(j) + lb_{t+1}(j)
            np.add(lE[t + 1], lb[t + 1], out=w)
            np.add(log_A, w, out=s)
            row_logsumexp(s, v)
            top = v.max()
            np.subtract(v, top if top > -np.inf else 0.0, out=lb[t])
        log_gamma = la + lb
        log_gamma -= logsumexp(log_gamma, axis=1, keepdims=True)
        log_xi = la[:-1, :, None] + log_A + (lE[1:] + lb[1:])[:, None, :]
        if T > 1:
            log_xi -= logsumexp(log_xi.reshape(T - 1, K * K), axis=1)[:, None, None]
    if not np.all(np.isfinite(log_gamma.max(axis=1))):
        raise ValueError(_IMPOSSIBLE)  # pragma: no cover (caught by the forward pass)
    return log_gamma, log_xi


def viterbi_batch(log_startprob, log_transmat, log_E, lengths=None):
    """Most probable paths of ``N`` sequences padded to a common length.

    Parameters
    ----------
    log_startprob : ndarray, shape (K,)
    log_transmat : ndarray, shape (K, K)
    log_E : ndarray, shape (N, T, K)
        Log emission probabilities (anything finite after a sequence's end).
    lengths : ndarray of int, shape (N,), optional

    Returns
    -------
    paths : ndarray of int, shape (N, T)
        Entries after a sequence's end are meaningless.
    log_prob : ndarray, shape (N,)
        ``max_Z ln p(V, Z)`` of each sequence.
    """
    N, T, K = log_E.shape
    ends = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
    delta = np.empty((T, N, K))
    back = np.empty((T, N, K), dtype=np.intp)
    delta[0] = log_startprob + log_E[:, 0]
    for t in range(1, T):
        cand = delta[t - 1][:, :, None] + log_transmat  # cand[n, i, j]
        back[t] = cand.argmax(axis=1)
        delta[t] = np.take_along_axis(cand, back[t][:, None, :], axis=1)[:, 0] + log_E[:, t]
    last = delta[ends, np.arange(N)]
    state = last.argmax(axis=1)
    log_prob = last[np.arange(N), state]
    paths = np.empty((N, T), dtype=np.intp)
    current = np.zeros(N, dtype=np.intp)
    idx = np.arange(N)
    for t in range(T - 1, -1, -1):
        current = np.where(ends == t, state, current)
        paths[:, t] = current
        if t > 0:
            current = back[t, idx, current]
    return paths, log_prob


def viterbi_long(log_startprob, log_transmat, log_E, block: int | None = None):
    """Most probable path of one long sequence with the blocked scheme in max-plus algebra.

    Same idea as the blocked forward pass, with ``(max, +)`` in place of ``(+, *)``:

    1. the first ``r < L`` steps run plainly, so that the remaining steps fill ``C`` blocks
       of exactly ``L`` steps;
    2. phase 1 gives every block's transfer matrix ``D_c[i, j]``, the best log-score of a
       path from state ``i`` at the block's start to state ``j`` at its end (``L`` steps
       vectorised across blocks);
    3. a loop over the blocks gives the Viterbi scores ``delta`` entering every block;
    4. phase 3 reruns the Viterbi recursion inside all blocks at once and keeps the back
       pointers; backtracking runs inside all blocks at once, for every possible end state,
       and a loop over the blocks then chains the blocks' end states. Because each block's
       start state is read off its own back pointers, the pieces always join up.

    Parameters
    ----------
    log_startprob : ndarray, shape (K,)
    log_transmat : ndarray, shape (K, K)
    log_E : ndarray, shape (T, K)
    block : int, optional
        Block length ``L`` (default about ``0.6 sqrt(T)``).

    Returns
    -------
    path : ndarray of int, shape (T,)
    log_prob : float
    """
    T, K = log_E.shape
    n = T - 1
    L = block if block is not None else max(1, int(0.6 * math.sqrt(n)))
    C = n // L
    r = n - C * L
    lA = log_transmat
    # step 1: the first r steps, plainly
    delta = log_startprob + log_E[0]
    back_pre = np.empty((r, K), dtype=np.intp)
    for t in range(1, r + 1):
        cand = delta[:, None] + lA
        back_pre[t - 1] = cand.argmax(axis=0)
        delta = cand.max(axis=0) + log_E[t]
    # log emissions of the blocked steps as G[l, j, c] (step r + c*L + l + 1)
    G = np.ascontiguousarray(log_E[r + 1:].reshape(C, L, K).transpose(1, 2, 0))
    lA4 = lA[None, :, :, None]
    # phase 1: max-plus transfer matrices D[i, j, c]
    D = np.full((K, K, C), -np.inf)
    D[np.arange(K), np.arange(K)] = 0.0
    for l in range(L):
        D = (D[:, :, None, :] + lA4).max(axis=1) + G[l][None]
    # phase 2: scores entering every block, as running max-plus products of the blocks'
    # transfer matrices after a first matrix holding delta in every row (doubling)
    X = np.empty((K, K, C))
    X[:, :, 0] = delta
    X[:, :, 1:] = D[:, :, :-1]
    _maxplus_scan(X)
    starts = X[0]  # (K, C)
    del X
    # phase 3: Viterbi inside all blocks, back pointers bp[l, j, c]
    bp = np.empty((L, K, C), dtype=np.intp)
    d = starts
    lA3 = lA[:, :, None]
    cand = np.empty((K, K, C))
    for l in range(L):
        np.add(d[:, None, :], lA3, out=cand)  # cand[i, j, c]
        cand.argmax(axis=0, out=bp[l])
        d = cand.max(axis=0)
        d += G[l]
    end = int(np.argmax(d[:, C - 1]))
    log_prob = float(d[end, C - 1])
    # backtrack inside every block for every end state at once
    states = np.empty((L, K, C), dtype=np.intp)
    s = np.repeat(np.arange(K)[:, None], C, axis=1)  # s[e, c]: state, given block end state e
    column = np.arange(C)
    for l in range(L - 1, -1, -1):
        states[l] = s
        s = bp[l].ravel().take(s * C + column)
    # chain the blocks: block c's start state is block c-1's end state
    ends = np.empty(C, dtype=np.intp)
    ends[C - 1] = end
    first = s.tolist()
    for c in range(C - 1, 0, -1):
        ends[c - 1] = first[ends[c]][c]
    path = np.empty(T, dtype=np.intp)
    path[r + 1:] = states[:, ends, np.arange(C)].T.reshape(-1)
    state = int(s[ends[0], 0])
    path[r] = state
    for t in range(r, 0, -1):
        state = int(back_pre[t - 1][state])
        path[t - 1] = state
    return path, log_prob


# ---------------------------------------------------------------------------------------------
# Lean blocked forward-backward (time-major), the E-step of emtutor.hmm.fit
# ---------------------------------------------------------------------------------------------

_RESCALE = 32  # steps between two rescalings of the unnormalised vectors and products
_TINY = 1e-200  # a sum below this after _RESCALE steps may have lost entries: fall back
_AGREE = 1e-9  # block boundaries from the scan and from the recursion must agree to this


@functools.lru_cache(maxsize=256)
def plan_blocks(n_seq: int, n_steps: int, n_states: int) -> int:
    """Block length ``L`` of :func:`posterior_blocks` (``L = n_steps``: one block).

    Rough cost model in microseconds, from timings on a laptop-class machine: a numpy call
    costs about a microsecond whatever its size, and each element it touches a little
    more. One block (the plain recursion) takes ``n_steps`` steps of 2 calls on
    ``N K`` numbers; ``C`` blocks of ``L`` steps take ``L`` steps of 2 calls on
    ``N C K^2`` numbers (phase 1), ``2 ceil(log2 C)`` rounds of about 5 calls on
    ``N C K^2`` numbers and ``N C`` small matrix products (phase 2) and ``L`` steps of 2
    calls on ``2 N C K`` numbers (phase 3), plus a few passes over the data.
    """
    call, elem, small_mm = 1.3, 0.0012, 0.08
    N, K = n_seq, n_states
    best_cost = n_steps * (2 * call + 2 * N * K * elem * (1.0 + K / 16))
    best = n_steps
    if n_steps >= 16:
        for L in range(4, min(n_steps, 4096) + 1, 2 if n_steps < 1000 else 8):
            C = -(-n_steps // L)
            if C == 1:
                break
            rounds = math.ceil(math.log2(C))
            cost = (L * (2.2 * call + N * C * K * K * elem * (1.0 + K / 8))
                    + 2 * rounds * (5 * call + N * C * (K * K * 3 * elem + small_mm * K / 3))
                    + L * (2 * call + 2 * N * C * K * elem * (1.0 + K / 8))
                    + 6 * N * C * L * K * elem)
            if cost < best_cost:
                best, best_cost = L, cost
    return best


def _scan_products(X) -> None:
    """Running products, in place, of the (K, K) matrices ``X[n, c]`` along axis 1, by doubling.

    Entry ``c`` becomes ``X_0 X_1 ... X_c`` divided by the sum of its entries (only
    directions matter to the caller); ``ceil(log2 C)`` rounds (Hillis-Steele scan). A
    product that vanishes gives NaN, which the caller detects.
    """
    N, C, K, _ = X.shape
    ones = np.ones(K * K)
    d = 1
    while d < C:
        Y = np.matmul(X[:, :-d], X[:, d:])
        Y /= (Y.reshape(N, C - d, K * K) @ ones)[:, :, None, None]
        X[:, d:] = Y
        d *= 2


def posterior_blocks(startprob, A, E, lengths=None, block: int | None = None, ws=None):
    """Scaled forward-backward of ``N`` sequences in blocks of ``L`` steps, few numpy calls.

    The same recursions as :func:`posterior_batch`, organised for as few numpy calls as
    possible. The ``T - 1`` steps of every sequence are cut into ``C`` blocks of ``L``
    steps (``L = T - 1``, one block, is the plain recursion):

    1. the products ``P_c = M_{cL+1} ... M_{cL+L}`` (``M_t = A diag(E_t)``) of all blocks,
       ``L`` steps each one product of ``A^T`` with a ``(K, K N C)`` array;
    2. the forward vectors entering and the backward vectors leaving every block, as
       running products of the ``P_c`` formed by doubling (``ceil(log2 C)`` rounds);
    3. the forward and the backward recursions inside all blocks at once, both in one
       product per step: ``[[A^T, 0], [0, A]] @ [alpha_{t-1}; w_s]`` gives
       ``[A^T alpha_{t-1}; beta_{s-1}]`` with ``w_s = E_s * beta_s``; one multiplication by
       ``[E_t; E_{s-1}]`` completes the step.

    The vectors are not normalised at every step: every ``_RESCALE`` steps they (and the
    products of phase 1) are divided by their sums, whose logs are kept. If such a sum is
    below ``_TINY`` (entries may have been lost to underflow), if the boundaries found in
    phase 2 disagree with the recursion of phase 3 by more than ``_AGREE``, or if
    ``sum_k alpha_t(k) beta_t(k)`` vanishes, the function returns ``None`` and the caller
    uses :func:`posterior_batch` (normalised at every step, with its own log-space
    fallback).

    Parameters
    ----------
    startprob : ndarray, shape (K,)
    A : ndarray, shape (K, K)
    E : ndarray, shape (K, N, T)
        Emission factors (largest entry of each step 1), equal to 1 after each sequence's
        end.
    lengths : ndarray of int, shape (N,), optional
        True lengths; ``None`` means all equal ``T``.
    block : int, optional
        Block length ``L``; default :func:`plan_blocks`.
    ws : dict, optional
        Workspace whose arrays are reused between calls (the returned ``gamma`` is one of
        them).

    Returns
    -------
    gamma : ndarray, shape (K, N, T)
    xi_sum : ndarray, shape (K, K)
    log_c : ndarray, shape (N,)
        ``sum_t ln c_t`` over each sequence's real steps.

    or ``None`` (see above).
    """
    K, N, T = E.shape
    n = T - 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a0 = startprob[:, None] * E[:, :, 0]
        c0 = np.ones(K) @ a0
        if not c0.min() > 0:
            return None
        a0 /= c0
        if n == 0:
            return a0[:, :, None].copy(), np.zeros((K, K)), np.log(c0)
        L = min(n, block if block is not None else plan_blocks(N, n, K))
        C = -(-n // L)
        L = -(-n // C)  # the same number of blocks, padding spread thin
        B = N * C
        full = n - (C - 1) * L  # real steps in the last block
        # G[k, :K, n, c]: factors of forward step k of block c (time cL + k + 1);
        # G[k, K:, n, c]: factors of backward step k (time cL + L - 1 - k); 1 after the end
        G = _buffer(ws, "G", (L, 2 * K, N, C))
        Gf, Gb = G[:, :K], G[:, K:]
        if C > 1:
            m = (C - 1) * L
            Gf[..., :-1] = E[:, :, 1:m + 1].reshape(K, N, C - 1, L).transpose(3, 0, 1, 2)
            Gb[..., :-1] = E[:, :, :m].reshape(K, N, C - 1, L)[..., ::-1].transpose(3, 0, 1, 2)
        m = (C - 1) * L
        Gf[:full, :, :, -1] = E[:, :, m + 1:].transpose(2, 0, 1)
        Gf[full:, :, :, -1] = 1.0
        r = min(full + 1, L)  # real positions 0 .. r - 1 of the last block's backward steps
        Gb[L - r:, :, :, -1] = E[:, :, m:m + r][..., ::-1].transpose(2, 0, 1)
        Gb[:L - r, :, :, -1] = 1.0
        G = G.reshape(L, 2 * K, B)
        f = a0
        b_end = np.full((K, B), 1.0 / K)
        AT = np.ascontiguousarray(A.T)
        if C > 1:
            # phase 1: P[j, i, b] = (M_{cL+1} ... M_{cL+L})_ij
            P = AT[:, :, None] * G[0, :K, None, :]
            Q = np.empty_like(P)
            P2, Q2 = P.reshape(K, K * B), Q.reshape(K, K * B)
            ones = np.ones(K * K)
            for k in range(1, L):
                np.dot(AT, P2, out=Q2)
                np.multiply(Q, G[k, :K, None, :], out=P)
                if k % _RESCALE == 0:
                    s = ones @ P.reshape(K * K, B)
                    if not s.min() > _TINY:
                        return None
                    P /= s
            # phase 2: entering forward vectors (prefix products after a rank-one start
            # whose rows are alpha_0) and leaving backward vectors (suffix products before
            # a rank-one end of ones), as stacks of (K, K) matrices
            P = P.reshape(K, K, N, C).transpose(2, 3, 1, 0)  # P[n, c, i, j]
            # The suffix products P_{c+1} ... P_{C-1} are transposed prefix products of the
            # reversed, transposed sequence, so that one scan serves both directions.
            X = np.empty((2, N, C, K, K))
            X[0, :, 0] = a0.T[:, None, :]
            X[0, :, 1:] = P[:, :-1]
            X[1, :, 0] = 1.0
            X[1, :, 1:] = P[:, :0:-1].transpose(0, 1, 3, 2)
            _scan_products(X.reshape(2 * N, C, K, K))
            f = X[0, :, :, 0, :].transpose(2, 0, 1).reshape(K, B)
            f = f / (np.ones(K) @ f)
            # row 0 of the reversed transposed product is column 0 of the suffix product
            b_end = X[1, :, ::-1, 0, :].transpose(2, 0, 1).reshape(K, B)
            b_end = b_end / (np.ones(K) @ b_end)
            if not (np.isfinite(f).all() and np.isfinite(b_end).all()):
                return None
        # phase 3: both recursions inside every block, one product per step
        BdT = np.zeros((2 * K, 2 * K))
        BdT[:K, :K] = AT
        BdT[K:, K:] = A
        R = _buffer(ws, "R", (L, 2 * K, B))  # [A^T alpha_{t-1}; beta_{s-1}]
        cur = np.empty((2 * K, B))  # [alpha_t; w_{s-1}], the next step's input
        cur[:K] = f
        np.multiply(b_end, G[L - 1, :K], out=cur[K:])
        log_f = np.zeros(B)
        scales = None
        half = np.zeros((2, 2 * K))  # half @ v: the sums of the two halves of v
        half[0, :K] = half[1, K:] = 1.0
        for k in range(L):
            np.dot(BdT, cur, out=R[k])
            np.multiply(R[k], G[k], out=cur)
            if k % _RESCALE == _RESCALE - 1 and k < L - 1:
                sums = half @ cur
                if not sums.min() > _TINY:
                    return None
                cur.reshape(2, K, B)[...] /= sums[:, None, :]
                log_f += np.log(sums[0])
                if scales is None:
                    scales = np.ones((L, B))
                scales[k] = sums[0]
        # everything per forward step k (time cL + k + 1), in the blocked layout:
        # alpha_t = R[k, :K] * E_t (formed in place); beta_t = R[L - 2 - k, K:] (b_end for
        # k = L - 1); the step started from prev = alpha[k - 1] / scales[k - 1] (f for k = 0)
        alpha = R[:, :K]
        alpha *= G[:, :K]
        beta = R[L - 2::-1, K:] if L > 1 else R[:0, K:]
        if C > 1:
            # phase 2 and phase 3 must agree on every block boundary
            fe = alpha[L - 1].reshape(K, N, C)[:, :, :-1]
            fe = fe / fe.sum(axis=0)
            bs = R[L - 1, K:].reshape(K, N, C)[:, :, 1:]
            bs = bs / bs.sum(axis=0)
            fb = f.reshape(K, N, C)[:, :, 1:]
            bb = b_end.reshape(K, N, C)[:, :, :-1]
            if not (np.abs(fe - fb).max() <= _AGREE and np.abs(bs - bb).max() <= _AGREE):
                return None
        gam = _buffer(ws, "gamma_b", (L, K, B))
        np.multiply(alpha[:L - 1], beta, out=gam[:L - 1])
        np.multiply(alpha[L - 1], b_end, out=gam[L - 1])
        g = np.ones(K) @ gam  # (L, B)
        real = None
        if lengths is not None or full < L:
            # which steps are real: time cL + k + 1 below the sequence's length
            time = (np.arange(C) * L)[None, :] + np.arange(1, L + 1)[:, None]  # (L, C)
            limit = np.full(N, T) if lengths is None else np.asarray(lengths)
            real = (time[:, None, :] < limit[None, :, None]).reshape(L, B)
            if not np.all((g > _G_MIN) | ~real):
                return None
        elif not g.min() > _G_MIN:
            return None
        # xi_t(i, j) = prev(i) A_ij E_t(j) beta_t(j) / Z_t with
        # Z_t = sum_j (A^T prev)_j E_t(j) beta_t(j) = g_t; U_t = E_t beta_t / Z_t, formed
        # in place of the forward factors, with the rescaling of prev folded in
        U = G[:, :K]
        U[:L - 1] *= beta
        U[L - 1] *= b_end
        Z = g.copy()
        if scales is not None:
            Z[1:] *= scales[:-1]
        if real is not None:
            Z[~real] = np.inf
        U /= Z[:, None, :]
        xi = A * (np.einsum("kib,kjb->ij", alpha[:L - 1], U[1:]) + f @ U[0].T)
        gam /= g[:, None, :]
        # ln p: per block, the log of the forward sum at its last step and the rescalings
        # before it (each block starts from a normalised vector)
        if real is None:
            ends = np.ones(K) @ alpha[L - 1]
            log_c = np.log(c0) + (log_f + np.log(ends)).reshape(N, C).sum(axis=1)
        else:
            # c_t = sum(alpha_t) / sum(prev), over each sequence's real steps
            num = np.ones(K) @ alpha
            den = np.ones((L, B))
            den[1:] = num[:-1]
            if scales is not None:
                den[1:] /= scales[:-1]
            ratio = np.where(real, num / den, 1.0)
            log_c = np.log(c0) + np.log(ratio).reshape(L, N, C).sum(axis=(0, 2))
        if not np.isfinite(log_c).all():
            return None
        # back to state-major (K, N, T)
        gamma = _buffer(ws, "gamma", (K, N, T))
        beta0 = R[L - 1, K:].reshape(K, N, C)[:, :, 0]
        g0 = a0 * beta0
        gamma[:, :, 0] = g0 / (np.ones(K) @ g0)
        gv = gam.reshape(L, K, N, C)
        if C > 1:
            gamma[:, :, 1:m + 1].reshape(K, N, C - 1, L)[...] = gv[..., :-1].transpose(
                1, 2, 3, 0)
        gamma[:, :, m + 1:] = gv[:full, :, :, -1].transpose(1, 2, 0)
    return gamma, xi, log_c


def _maxplus_scan(X) -> None:
    """Running max-plus products, in place, of the state-major matrices ``X[:, :, c]``.

    Entry ``c`` becomes ``X_0 (x) X_1 (x) ... (x) X_c`` with
    ``(U (x) V)_ij = max_m U_im + V_mj``, in ``ceil(log2 C)`` rounds of doubling
    (Hillis-Steele scan), each one addition and one maximum over all entries.
    """
    K, _, C = X.shape
    work = np.empty((K, K, K, C))
    d = 1
    while d < C:
        w = np.add(X[:, :, None, :-d], X[None, :, :, d:], out=work[..., :C - d])
        np.max(w, axis=1, out=X[:, :, d:])
        d *= 2


def viterbi_scan(log_startprob, log_transmat, log_E):
    """Most probable path of one short sequence: Viterbi scores by a max-plus scan.

    The Viterbi scores obey ``delta_t = delta_{t-1} (x) S_t`` in max-plus algebra
    (``(u (x) S)_j = max_i u_i + S_ij``) with ``S_t[i, j] = ln A_ij + ln p(x_t | j)``, so
    they are running max-plus products of ``T`` small matrices, the first one holding
    ``delta_0`` in every row. ``ceil(log2 T)`` rounds of doubling (Hillis-Steele scan,
    each one vectorised over all steps) give them all; the back pointers then follow from
    one vectorised ``argmax``, and the path from a loop of ``T`` list look-ups. About 30
    numpy calls in all, against a few per time step for the step-by-step recursion, for
    ``T K^3 log2 T`` additions: the path for short sequences and few states.

    Parameters
    ----------
    log_startprob : ndarray, shape (K,)
    log_transmat : ndarray, shape (K, K)
    log_E : ndarray, shape (T, K)

    Returns
    -------
    path : ndarray of int, shape (T,)
    log_prob : float
    """
    T, K = log_E.shape
    X = np.empty((K, K, T))  # X[i, j, t]: state-major, every operation runs along t
    X[:, :, 0] = log_startprob + log_E[0]
    np.add(log_transmat[:, :, None], log_E[1:].T[None], out=X[:, :, 1:])
    _maxplus_scan(X)
    delta = X[0]  # (K, T)
    state = int(np.argmax(delta[:, T - 1]))
    log_prob = float(delta[state, T - 1])
    path = np.empty(T, dtype=np.intp)
    if T > 1:
        back = (delta[:, None, :-1] + log_transmat[:, :, None]).argmax(axis=0).T.tolist()
        out = [state] * T
        for t in range(T - 1, 0, -1):
            state = back[t - 1][state]
            out[t - 1] = state
        path[:] = out
    else:
        path[0] = state
    return path, log_prob


_BAND_MIN = 1e-100  # smallest acceptable sum of an unnormalised vector of the banded path
_BAND_MAX = 1e250  # largest (far from overflow; large values lose no relative precision)


@functools.lru_cache(maxsize=32)
def _band_layout(T: int, K: int):
    """Band storage of the two triangular systems of :func:`posterior_banded`, side by side.

    Returns the (2K, 2 T K) band array with its diagonal set to 1 and every other entry 0,
    and the flat positions where the values ``-A_ij E_t(j) / s_t`` go (``t = 1 .. T - 1``,
    then ``i``, ``j``): first in the forward system, column ``(t - 1) K + i`` and
    sub-diagonal ``K + j - i``; then in the backward system with its unknowns in reversed
    order (which makes it lower triangular too), column ``2 T K - 1 - t K - j``, the same
    sub-diagonal. The caller copies the array before filling it.
    """
    n = T * K
    i, j = np.meshgrid(np.arange(K), np.arange(K), indexing="ij")
    t = np.arange(1, T)[:, None, None]
    rows = (K + j - i)[None]
    fwd = rows * (2 * n) + (t - 1) * K + i[None]
    bwd = rows * (2 * n) + 2 * n - 1 - t * K - j[None]
    ab = np.zeros((2 * K, 2 * n))
    ab[0] = 1.0
    ab.setflags(write=False)
    return ab, np.concatenate([fwd.ravel(), bwd.ravel()])


def posterior_banded(startprob, A, E):
    """Forward-backward of one short sequence as triangular banded solves (one LAPACK call).

    Stacking ``alpha_0, ..., alpha_{T-1}`` into one vector of length ``T K``, the forward
    recursion ``alpha_t = (alpha_{t-1} A) diag(E_t) / s_t`` is the lower triangular system
    ``(I - S) a = [alpha_0; 0; ...; 0]`` whose only non-zero blocks
    ``-(A diag(E_t))^T / s_t`` sit just below the diagonal: a band of ``2K - 1``
    sub-diagonals, solved by forward substitution (LAPACK ``dtbtrs``), which performs
    exactly the sequential recursion, in compiled code. The backward recursion
    ``beta_{t-1} = A diag(E_t) beta_t / s_t`` is the transposed system; with its unknowns
    in reversed order it is lower triangular as well, and the two systems, side by side in
    one band, are solved in the same call. Nothing is normalised during the solve; the
    constants ``s_t``, fixed in advance, are the divisors ``c_t`` that a one-step filter
    would give (the forward vector at ``t - 1`` replaced by ``E_{t-1}`` normalised),
    close enough to the true ones that the vectors stay within a few hundred orders of
    magnitude of 1 for ordinary data. If a forward or backward vector's sum leaves
    ``[_BAND_MIN, _BAND_MAX]`` (below, its small entries could have underflowed) the
    function returns ``None`` and the caller takes the blocked path.

    The work is ``O(T K^3)`` (the band), against ``O(T K^2)`` for the recursions, but in
    about 30 numpy calls and one LAPACK call whatever ``T``: the path for one short
    sequence with few states (homework sizes), where per-call overhead is the whole cost.

    Parameters
    ----------
    startprob : ndarray, shape (K,)
    A : ndarray, shape (K, K)
    E : ndarray, shape (K, 1, T)
        Emission factors of one sequence.

    Returns
    -------
    gamma : ndarray, shape (K, 1, T)
    xi_sum : ndarray, shape (K, K)
    log_c : ndarray, shape (1,)

    or ``None`` (see above).
    """
    K, _, T = E.shape
    if T < 2:
        return None
    n = T * K
    ones = np.ones(K)
    Et = E[:, 0].T  # (T, K)
    a0 = startprob * Et[0]
    c0 = float(a0 @ ones)
    # s_t: the step's divisor c_t if the forward vector at t - 1 were E_{t-1} normalised
    q = Et[:-1] @ A
    q *= Et[1:]
    s = q @ ones
    s /= Et[:-1] @ ones
    if not (c0 > 0 and s.min() > 0):
        return None
    vals = Et[1:] / s[:, None]
    vals = A * vals[:, None, :]
    vals *= -1.0
    empty, where = _band_layout(T, K)
    ab = empty.copy()
    flat = vals.ravel()
    ab.ravel()[where] = np.concatenate([flat, flat])
    rhs = np.zeros((2 * n, 1))
    rhs[:K, 0] = a0 / c0
    rhs[n:n + K, 0] = 1.0
    x, info = _dtbtrs(ab, rhs, uplo="L", trans="N", diag="U", overwrite_b=1)
    alpha = x[:n].reshape(T, K)
    beta = x[n:][::-1].reshape(T, K)
    sa = alpha @ ones
    sb = beta @ ones
    lo, hi = min(sa.min(), sb.min()), max(sa.max(), sb.max())
    if info or not (lo > _BAND_MIN and hi < _BAND_MAX):  # NaN fails too
        return None
    gamma = alpha * beta
    g = gamma @ ones
    gamma /= g[:, None]
    # xi_t(i, j) = alpha_{t-1}(i) A_ij E_t(j) beta_t(j) / (s_t g_t)
    U = Et[1:] * beta[1:]
    s *= g[1:]
    U /= s[:, None]
    xi = A * (alpha[:-1].T @ U)
    log_c = math.log(c0) + math.log(sa[-1]) + float(np.log(s / g[1:]).sum())
    return np.ascontiguousarray(gamma.T)[:, None, :], xi, np.array([log_c])


_BANDED_WORK = 20_000  # one sequence with T K^2 at most this takes the banded solves


def posterior(startprob, A, E, lengths=None, log_E=None, ws=None):
    """The E-step's choice of path by size; same arguments and results as
    :func:`posterior_batch` (without ``pairwise``).

    1. One sequence with ``2 <= T`` and ``T K^2 <= _BANDED_WORK`` (``T`` up to about 2,000
       for ``K = 3``, 200 for ``K = 10``): :func:`posterior_banded`, two LAPACK solves.
    2. Otherwise, or if that declines: :func:`posterior_blocks`, with the block length of
       :func:`plan_blocks` (one block, the plain recursion, for many states or many short
       sequences; blocks of tens to hundreds of steps for long chains with few states).
    3. If that declines (vectors that may have lost entries to underflow):
       :func:`posterior_batch`, normalised at every step, which itself falls back to log
       space when the scaled vectors cannot represent the posterior.
    """
    K, N, T = E.shape
    found = None
    if N == 1 and 2 <= T and T * K * K <= _BANDED_WORK:
        found = posterior_banded(startprob, A, E)
    if found is None:
        found = posterior_blocks(startprob, A, E, lengths, ws=ws)
    if found is None:
        found = posterior_batch(startprob, A, E, lengths, log_E, ws=ws)
    return found
