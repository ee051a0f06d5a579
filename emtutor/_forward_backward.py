"""Private numerics of :mod:`emtutor.hmm`: scaled forward-backward and Viterbi recursions.

Layout and scaling
------------------
Arrays are *state-major*: the state index comes first, ``E[k, n, t]`` for sequence ``n`` at
time ``t``, so that every elementwise operation of a recursion step runs over long
contiguous rows (one per state) instead of many rows of length ``K``.

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
(both near ``sqrt(T)``) and every loop below runs over at most ``max(C, L)`` positions, each
iteration vectorised across all blocks (and all sequences):

1. *Block transfer matrices* ``P_c = M_{s+1} ... M_{s+L}``. Starting from the identity, for
   ``l = 1, ..., L`` every block multiplies its running product by its ``l``-th matrix. The
   ``K`` rows of all ``C`` products are pushed through at once: one step is one product of
   ``A^T`` with a ``(K, K * C)`` array, one broadcast multiplication by the emission factors,
   and a division of every row by its sum. The log of every divisor is kept, so rows never
   underflow, even with structural zeros in ``A`` (a row that becomes exactly zero stays
   zero, and its scale does not matter).
2. *Block boundaries.* A short sequential loop over the blocks gives the normalised forward
   vector at the end of each block, ``alpha_end = alpha_start P_c``, and, walking back, the
   normalised backward vector at the start of each block, ``beta_start = P_c beta_end``: the
   same transfer matrices serve both directions. Rows are re-weighted by their kept scales
   (relative to the largest one); in the rare case where this re-weighting underflows the
   whole result, the step is redone in log space.
3. *Inside the blocks.* Knowing every block's entry vector, the ordinary scaled recursion
   runs for ``L`` steps on all blocks at once, forward and backward (one ``(K, K) @ (K, C)``
   product per step). The forward divisors are exactly the ``c_t`` above, because every
   block starts from the true normalised forward vector.

All quantities are non-negative, so regrouping the products changes only rounding (about
``1e-15`` relative). Phase 1 does ``K`` times the flops of a plain pass, which pays for small
``K`` and long sequences; for large ``K``, or for many short sequences (where vectorising
each time step across sequences already removes the overhead), the plain recursion
(``C = 1``: phase 3 only) is used. :func:`_plan` makes that choice with a rough cost model.

Several sequences are padded to a common length with emission factors equal to 1 *after*
their end. Padding at the end leaves every forward variable of the real steps untouched, and
the backward vector at a sequence's last real step becomes ``A^p 1 = 1`` (rows of ``A`` sum
to 1), its correct value, so no masking is needed inside the recursions.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

_TINY = np.finfo(float).tiny
_SMALL = 1e-250  # below this a re-weighted sum is recomputed in log space
_FLUSH = 1e-280  # a running product of divisors below this is moved into its log
_G_MIN = 1e-300  # smallest acceptable sum_k alpha_t(k) beta_t(k) before falling back

_IMPOSSIBLE = (
    "the observations have probability zero under these parameters (every path is "
    "ruled out by a zero start, transition or emission probability)"
)


def _plan(n_chains: int, n_steps: int, n_states: int) -> tuple[int, int]:
    """Choose the block length ``L`` and number of blocks ``C`` (``C * L >= n_steps``).

    Rough cost model in microseconds: a vectorised step costs a fixed interpreter overhead
    plus a small amount per element touched. The plain recursion takes ``2 n_steps`` steps
    on ``N K`` numbers; the blocked one ``L`` steps on ``N C K^2`` numbers (phase 1), ``2 L``
    steps on ``N C K`` numbers (phase 3) and ``2 C`` cheap steps (phase 2).
    """
    overhead, boundary, per_element = 5.0, 4.0, 0.0025
    N, K = n_chains, n_states
    plain = 2 * n_steps * (overhead + N * K * per_element)
    best = (plain, n_steps, 1)
    if n_steps >= 64:
        root = math.sqrt(n_steps)
        for L in {max(2, int(root * f)) for f in (0.5, 0.7, 1.0, 1.4)}:
            C = -(-n_steps // L)
            cost = (L * (overhead + N * C * K * K * (1.0 + K / 8.0) * per_element)
                    + 2 * L * (overhead + N * C * K * per_element)
                    + 2 * C * (boundary + N * K * K * per_element))
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

    Returns ``R`` of shape (N, C, K, K) with ``R[n, c, i]`` the row ``e_i P_c`` divided by its
    sum (zero if that row is zero) and ``log_scale`` of shape (N, C, K) with the log of those
    sums (``-inf`` for a zero row).
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
    R = R.reshape(K, K, n_seq, NC // n_seq).transpose(2, 3, 1, 0)  # (N, C, i, j)
    return np.ascontiguousarray(R), log_scale.reshape(K, n_seq, NC // n_seq).transpose(1, 2, 0)


def _boundaries(alpha0, R, log_scale):
    """Phase 2: forward vectors entering each block and backward vectors leaving each block.

    Returns ``f_start`` and ``b_end``, both (K, N, C): the normalised ``alpha`` at the start of
    every block and the normalised ``beta`` at its end.
    """
    N, C, K, _ = R.shape
    top = log_scale.max(axis=2, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    W = np.exp(log_scale - top)  # row weights relative to the largest row of the block
    Rw = R * W[..., None]  # Rw[n, c, i, :] = W_i * R_i
    f_start = np.empty((C, N, K))
    b_end = np.empty((C, N, K))
    with np.errstate(divide="ignore", invalid="ignore"):
        if N == 1:  # the common case of one long sequence: plain vector-matrix products
            Rw1, R1, ls1 = Rw[0], R[0], log_scale[0]
            ones = np.ones(K)
            v = alpha0[:, 0].copy()
            f_start[0, 0] = v
            for c in range(C - 1):
                nxt = v @ Rw1[c]  # alpha_end = sum_i v_i W_i R_i
                s = nxt @ ones
                if s < _SMALL:  # the re-weighting underflowed: redo in log space
                    lw = np.log(v) + ls1[c]
                    nxt = np.exp(lw - lw.max()) @ R1[c]
                    s = nxt @ ones
                nxt /= s
                f_start[c + 1, 0] = v = nxt
            u = np.full(K, 1.0 / K)
            b_end[C - 1, 0] = u
            for c in range(C - 1, 0, -1):
                nxt = Rw1[c] @ u  # beta_start(i) = W_i R_i . u
                s = nxt @ ones
                if s < _SMALL:
                    lw = np.log(R1[c] @ u) + ls1[c]
                    nxt = np.exp(lw - lw.max())
                    s = nxt @ ones
                nxt /= s
                b_end[c - 1, 0] = u = nxt
        else:
            v = alpha0.T.copy()  # (N, K)
            f_start[0] = v
            for c in range(C - 1):
                nxt = np.matmul(v[:, None, :], Rw[:, c])[:, 0]
                s = nxt.sum(axis=1)
                if s.min() < _SMALL:
                    lw = np.log(v) + log_scale[:, c]
                    w = np.exp(lw - lw.max(axis=1, keepdims=True))
                    nxt = np.matmul(w[:, None, :], R[:, c])[:, 0]
                    s = nxt.sum(axis=1)
                f_start[c + 1] = v = nxt / s[:, None]
            u = np.full((N, K), 1.0 / K)
            b_end[C - 1] = u
            for c in range(C - 1, 0, -1):
                nxt = np.matmul(Rw[:, c], u[:, :, None])[:, :, 0]
                s = nxt.sum(axis=1)
                if s.min() < _SMALL:
                    lw = np.log(np.matmul(R[:, c], u[:, :, None])[:, :, 0]) + log_scale[:, c]
                    nxt = np.exp(lw - lw.max(axis=1, keepdims=True))
                    s = nxt.sum(axis=1)
                b_end[c - 1] = u = nxt / s[:, None]
    f_start = f_start.transpose(2, 1, 0)
    b_end = b_end.transpose(2, 1, 0)
    return f_start, b_end


def posterior_batch(startprob, transmat, E, lengths=None, log_E=None, pairwise=False):
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
    alpha = np.empty((K, N, T))
    beta = np.empty((K, N, T))
    a0 = startprob[:, None] * E[:, :, 0]
    c0 = a0.sum(axis=0)
    if np.any(c0 <= 0):
        return _fallback(startprob, A, log_E, lengths, pairwise)
    alpha[:, :, 0] = a0 / c0
    log_c = np.log(c0)
    beta[:, :, T - 1] = 1.0
    if n_steps:
        L, C = _plan(N, n_steps, K)
        padded = C * L
        # Emission factors of steps 1..T-1 as F[l, k, n*C + c] (step c*L + l + 1 of
        # sequence n), padded with ones up to C*L steps.
        if C == 1:
            F = np.ascontiguousarray(np.moveaxis(E[:, :, 1:], 2, 0))
        else:
            Ep = np.ones((K, N, padded))
            Ep[:, :, :n_steps] = E[:, :, 1:]
            F = np.ascontiguousarray(Ep.reshape(K, N, C, L).transpose(3, 0, 1, 2))
            del Ep
        F = F.reshape(L, K, N * C)
        if C == 1:
            f_start = alpha[:, :, :1]
            b_end = np.ones((K, N, 1))
        else:
            R, log_scale = _transfer_matrices(F, A, N)
            f_start, b_end = _boundaries(alpha[:, :, 0], R, log_scale)
            del R
        out = np.empty((L, K, N * C))
        norms = np.empty((L, 1, N * C))
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
    gamma = alpha * beta
    g = np.ones(K) @ gamma.reshape(K, N * T)
    g = g.reshape(N, T)
    real = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    # g_t = sum_k alpha_t(k) beta_t(k) > 1e-300 unless the posterior mass sits where the
    # scaled vectors lost it to underflow (or the data are impossible, NaN from 0 / 0).
    ok = (g > _G_MIN) if real is None else ((g > _G_MIN) | ~real)
    if not np.all(ok) or not np.all(np.isfinite(log_c)):
        return _fallback(startprob, A, log_E, lengths, pairwise)
    gamma /= g
    U = np.zeros((K, N, T))
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
