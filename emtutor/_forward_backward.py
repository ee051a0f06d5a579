"""Private numerics of :mod:`emtutor.hmm`: scaled forward-backward and Viterbi recursions.

Everything here works on *emission factors* ``E[t, k] = p(x_t | z_t = k) / s_t`` where
the per-step constant ``s_t = max_k p(x_t | z_t = k)`` has been divided out (its log is
added back to the log-likelihood by the caller). Each row of ``E`` therefore has a largest
entry of exactly 1, so no emission, however unlikely (``ln p`` near -1000 or below),
underflows the recursions in probability space.

The forward recursion as a product of matrices
----------------------------------------------
With row vectors, the forward variables obey ``alpha_t = alpha_{t-1} M_t`` where
``M_t = A diag(E_t)``, and the backward variables obey ``beta_{t-1} = beta_t M_t^T`` with
``M_t^T = diag(E_t) A^T``. Both are running products of ``T - 1`` small matrices. Written as
a loop over ``t`` in numpy, each step costs a few microseconds of interpreter overhead for a
few dozen flops; for ``T = 100,000`` that overhead is everything.

The blocked scheme removes it. The ``T - 1`` steps are cut into ``C`` blocks of ``L`` steps
(``C`` and ``L`` near ``sqrt(T)``) and three phases each loop over at most ``max(C, L)``
positions, every one of them vectorised across all blocks (and across sequences):

1. *Block transfer matrices.* Starting from the identity, for ``l = 1, ..., L`` every block
   multiplies its running product by the block's ``l``-th matrix ``M``. Because the identity's
   ``K`` rows are pushed through at once, one step of all ``C`` blocks is one tall-skinny
   product ``R.reshape(C*K, K) @ A`` followed by a broadcast multiplication with the
   emission factors. Each row is divided by its sum after every step (the log of each
   divisor is kept), so rows never underflow even with structural zeros in ``A``.
2. *Block boundaries.* A short sequential loop over the ``C`` blocks combines the incoming
   normalised vector with the block's transfer matrix (rows re-weighted by their kept log
   normalisers) to get the normalised vector at the start of the next block.
3. *Inside the blocks.* Knowing every block's start vector, the ordinary scaled recursion
   runs for ``L`` steps on all blocks at once (one ``(C, K) @ (K, K)`` product per step). Its
   per-step normalisers are exactly the classic scaling coefficients ``c_t`` of Rabiner
   (1989), because every block starts from the true normalised forward vector.

All quantities are positive, so the reordering of the products changes nothing but rounding
(about ``1e-15`` relative). Phase 1 costs ``K`` times the flops of the plain recursion, which
pays for small ``K`` and a long sequence; for large ``K``, or for many short sequences (where
vectorising each time step across sequences already removes the overhead), the plain
recursion (``C = 1``: phase 3 only) is used. :func:`_plan` makes that choice.

Several sequences are padded to a common length with emission factors equal to 1 *after*
their end. Padding at the end leaves every forward variable of the real steps untouched, and
the backward variable at a sequence's last real step becomes ``A^p 1 = 1`` (rows of ``A``
sum to 1), its correct value, so no masking is needed inside the recursions.
"""

from __future__ import annotations

import math

import numpy as np

_TINY = np.finfo(float).tiny


def _plan(n_chains: int, n_steps: int, n_states: int) -> tuple[int, int]:
    """Choose the block length ``L`` and number of blocks ``C`` (``C * L >= n_steps``).

    A rough cost model in microseconds: every vectorised step costs ``OVERHEAD`` of
    interpreter time, every element touched costs ``PER_ELEMENT``. Blocking saves
    ``n_steps - 2 L - C`` steps of overhead and adds phase 1, whose work is ``K`` times that
    of the plain recursion (plus a matrix product that grows like ``K^3``).
    """
    overhead, per_element = 4.0, 0.002
    K = n_states
    if n_steps < 64:
        return max(n_steps, 1), 1
    L = max(1, int(math.sqrt(n_steps)))
    C = -(-n_steps // L)
    saved = (n_steps - 2 * L - C) * overhead
    extra = per_element * n_chains * C * L * K * K * (2.0 + K / 8.0)
    if saved > extra:
        return L, C
    return n_steps, 1


def _propagate(V, M, F, norms, *, emission_first: bool, reverse: bool, out=None):
    """Push ``n * s`` row vectors through ``L`` steps at once, normalising after every step.

    Parameters
    ----------
    V : ndarray, shape (n, s, K)
        Start vectors: ``s`` vectors for each of ``n`` chains (not modified).
    M : ndarray, shape (K, K)
        Right factor of every step (``A`` forward, ``A.T`` backward).
    F : ndarray, shape (L, n, K)
        Emission factors; step ``l`` of chain ``i`` uses ``F[l, i]``.
    norms : ndarray, shape (L, n, s)
        Receives the divisor used at every step (sum of the row, at least ``_TINY``).
    emission_first : bool
        Step is ``v <- (v * f) @ M`` (backward) if true, else ``v <- (v @ M) * f`` (forward).
    reverse : bool
        Walk ``l = L - 1, ..., 0`` instead of ``0, ..., L - 1``.
    out : ndarray, shape (L, n, K), optional
        Only for ``s == 1``: receives the normalised vector after every step.

    Returns
    -------
    ndarray, shape (n, s, K)
        The normalised vectors after the last step.
    """
    L, n, K = F.shape
    s = V.shape[1]
    rows = n * s
    ones = np.ones(K)
    cur = np.array(V, dtype=float).reshape(rows, K)
    spare = np.empty_like(cur)
    tmp = np.empty_like(cur) if emission_first else None
    for l in range(L - 1, -1, -1) if reverse else range(L):
        dst = spare if out is None else out[l].reshape(rows, K)
        f = F[l][:, None, :]  # (n, 1, K): the same factors for the s vectors of a chain
        if emission_first:
            np.multiply(cur.reshape(n, s, K), f, out=tmp.reshape(n, s, K))
            np.matmul(tmp, M, out=dst)
        else:
            np.matmul(cur, M, out=dst)
            dst3 = dst.reshape(n, s, K)
            dst3 *= f
        nrm = norms[l].reshape(rows)
        np.matmul(dst, ones, out=nrm)
        np.maximum(nrm, _TINY, out=nrm)  # a zero row stays zero; its divisor is irrelevant
        dst /= nrm[:, None]
        if out is None:
            cur, spare = dst, cur
        else:
            cur = dst
    return cur.reshape(n, s, K)


def _chain_pass(start, M, F, n_blocks: int, *, backward: bool):
    """Normalised forward (or backward) vectors of ``N`` sequences cut into ``C`` blocks each.

    Parameters
    ----------
    start : ndarray, shape (N, K)
        Normalised vector entering each sequence: ``alpha_0`` forward, ones backward.
    M : ndarray, shape (K, K)
        ``A`` forward, ``A.T`` backward.
    F : ndarray, shape (L, N * C, K)
        Emission factors of the steps, chain ``i = n * C + c`` is block ``c`` of sequence ``n``.
    n_blocks : int
        ``C``.
    backward : bool
        Backward recursion (blocks visited last to first, steps in reverse).

    Returns
    -------
    out : ndarray, shape (L, N * C, K)
        Normalised vectors after every step (forward: ``alpha`` at step ``l + 1`` of the
        block; backward: ``beta`` at step ``l`` of the block).
    norms : ndarray, shape (L, N * C)
        The per-step divisors (forward: the scaling coefficients ``c_t``).
    """
    L, NC, K = F.shape
    C = n_blocks
    N = NC // C
    starts = np.empty((N, C, K))
    if C == 1:
        starts[:, 0] = start
    else:
        # Phase 1: the transfer matrix of every block, one normalised row per basis vector.
        basis = np.broadcast_to(np.eye(K), (NC, K, K))
        row_norms = np.empty((L, NC, K))
        R = _propagate(basis, M, F, row_norms, emission_first=backward, reverse=backward)
        R = R.reshape(N, C, K, K)
        log_w = np.log(row_norms).sum(axis=0).reshape(N, C, K)  # log of each row's true scale
        # Phase 2: sequential over blocks, vectorised over sequences.
        v = np.array(start, dtype=float)
        order = range(C - 1, -1, -1) if backward else range(C)
        for c in order:
            starts[:, c] = v
            if c == (0 if backward else C - 1):
                break
            w = v * np.exp(log_w[:, c] - log_w[:, c].max(axis=1, keepdims=True))
            v = np.matmul(w[:, None, :], R[:, c])[:, 0]
            v /= np.maximum(v.sum(axis=1, keepdims=True), _TINY)
    # Phase 3: the plain scaled recursion inside every block at once.
    out = np.empty((L, NC, K))
    norms = np.empty((L, NC, 1))
    _propagate(starts.reshape(NC, 1, K), M, F, norms, emission_first=backward,
               reverse=backward, out=out)
    return out, norms.reshape(L, NC)


def posterior_batch(startprob, transmat, E, lengths=None):
    """Forward-backward for ``N`` sequences padded to a common length.

    Parameters
    ----------
    startprob : ndarray, shape (K,)
    transmat : ndarray, shape (K, K)
    E : ndarray, shape (N, T, K)
        Emission factors (rows with largest entry 1); entries after a sequence's end must be 1.
    lengths : ndarray of int, shape (N,), optional
        True lengths; ``None`` means all equal ``T``.

    Returns
    -------
    gamma : ndarray, shape (N, T, K)
        Posterior marginals (rows after a sequence's end are meaningless).
    alpha : ndarray, shape (N, T, K)
        Normalised forward vectors.
    U : ndarray, shape (N, T - 1, K)
        ``U[n, t - 1, j] = E_t(j) beta_t(j) / (c_t g_t)`` for the real steps, zero after the
        end, so that ``xi_t(i, j) = alpha_{t-1}(i) A_ij U[t - 1, j]``.
    log_c : ndarray, shape (N,)
        ``sum_t ln c_t`` over each sequence's real steps (log-likelihood minus the shifts).
    """
    N, T, K = E.shape
    n_steps = T - 1
    A = transmat
    alpha = np.empty((N, T, K))
    beta = np.empty((N, T, K))
    alpha0 = startprob * E[:, 0]
    c0 = alpha0.sum(axis=1)
    if np.any(c0 == 0):
        raise ValueError(_IMPOSSIBLE)
    alpha[:, 0] = alpha0 / c0[:, None]
    log_c = np.log(c0)
    U = np.zeros((N, n_steps, K))
    if n_steps == 0:
        beta[:, 0] = 1.0
    else:
        L, C = _plan(N, n_steps, K)
        padded = C * L
        # Emission factors of the steps in (L, N * C, K) layout, padded with ones.
        Fp = np.ones((N, padded, K))
        Fp[:, :n_steps] = E[:, 1:]
        F = np.ascontiguousarray(Fp.reshape(N, C, L, K).transpose(2, 0, 1, 3)).reshape(
            L, N * C, K)
        del Fp
        fwd, c = _chain_pass(alpha[:, 0], A, F, C, backward=False)
        # fwd[l, n*C + c] is alpha at time c*L + l + 1 of sequence n.
        full = fwd.reshape(L, N, C, K).transpose(1, 2, 0, 3).reshape(N, padded, K)
        alpha[:, 1:] = full[:, :n_steps]
        c_seq = c.reshape(L, N, C).transpose(1, 2, 0).reshape(N, padded)[:, :n_steps]
        del fwd, full
        bwd, _ = _chain_pass(np.ones((N, K)), A.T, F, C, backward=True)
        # bwd[l, n*C + c] is beta at time c*L + l of sequence n.
        full = bwd.reshape(L, N, C, K).transpose(1, 2, 0, 3).reshape(N, padded, K)
        beta[:, :n_steps] = full[:, :n_steps]
        beta[:, n_steps] = 1.0
        del bwd, full
        if lengths is None:
            log_c = log_c + np.log(c_seq).sum(axis=1)
        else:
            real = np.arange(1, T)[None, :] < lengths[:, None]
            log_c = log_c + np.where(real, np.log(c_seq), 0.0).sum(axis=1)
    gamma = alpha * beta
    g = gamma @ np.ones(K)
    if lengths is None:
        bad = g <= 0
    else:
        bad = (g <= 0) & (np.arange(T)[None, :] < lengths[:, None])
    if np.any(bad):
        raise ValueError(_IMPOSSIBLE)
    g = np.maximum(g, _TINY)
    gamma /= g[:, :, None]
    if n_steps:
        U[:] = E[:, 1:] * beta[:, 1:]
        U /= (c_seq * g[:, 1:])[:, :, None]
        if lengths is not None:
            U *= (np.arange(1, T)[None, :] < lengths[:, None])[:, :, None]
    return gamma, alpha, U, log_c


_IMPOSSIBLE = (
    "the observations have probability zero under these parameters (every path is "
    "ruled out by a zero start, transition or emission probability)"
)


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
