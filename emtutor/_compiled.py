"""Optional compiled kernels for :mod:`emtutor.hmm` (numba), with the numpy code as reference.

The recursions of an HMM are loops over time steps. :mod:`emtutor._forward_backward`
removes the interpreter from those loops with numpy alone (banded solves, blocked prefix
products, vectorising across sequences); that is the course's reference implementation, and
what runs when numba is not installed. With `numba <https://numba.pydata.org>`_ installed
(``pip install emtutor[fast]``), the two kernels below run instead:

* :func:`posterior_kernel`, the scaled forward-backward recursion of every sequence in one
  compiled loop: it writes the posterior marginals ``gamma`` and accumulates the expected
  transition counts ``xi_sum`` during the backward pass, so no ``(T, K, K)`` array and no
  backward vectors are stored;
* :func:`viterbi_kernel`, the Viterbi recursion with one ``(T, K)`` array of back-pointers.

They compute the same quantities as the numpy paths, step by step in the same order of
ideas (emission factors with the largest entry of each step equal to 1, forward vectors
divided by their sums ``c_t``, backward vectors divided by theirs, posteriors normalised by
``g_t = sum_k alpha_t(k) beta_t(k)``); ``tests/test_hmm_compiled.py`` compares the two
paths, brute-force enumeration and a log-space recursion to 1e-12. Where the
scaled vectors cannot represent the posterior (``g_t`` below ``1e-300``, or a zero ``c_t``)
the kernel reports failure and the numpy code, with its log-space fallback, takes over.

Which runs
----------
``enabled()`` is true when numba imports and the environment variable
``EMTUTOR_COMPILED`` is not ``0`` (read once, at the first E-step or Viterbi call). Set
``EMTUTOR_COMPILED=0`` before that to run the numpy reference paths. The first call
compiles the kernels (a few seconds; numba caches the machine code next to this file, so
later sessions load it in milliseconds).
"""

from __future__ import annotations

import os

import numpy as np

_G_MIN = 1e-300  # as emtutor._forward_backward: smallest acceptable normalised g_t

_kernels = None  # the compiled (posterior, viterbi) kernels, once compiled
_state: dict = {}  # "enabled": decided at the first call of enabled()


def _numba():
    try:
        import numba
    except ImportError:
        return None
    return numba


def enabled() -> bool:
    """True if the compiled kernels are used: numba imports and ``EMTUTOR_COMPILED`` is not
    ``0``. Decided once, at the first E-step or Viterbi call of the session (numba is
    imported then, not with :mod:`emtutor`)."""
    on = _state.get("enabled")
    if on is None:
        on = _state["enabled"] = (os.environ.get("EMTUTOR_COMPILED", "1").strip() != "0"
                                  and _numba() is not None)
    return on


def _posterior_py(pi, A, E, starts, lengths):
    """Scaled forward-backward over the sequences ``E[:, s:s + n]`` (state-major E).

    Returns ``(gamma (K, n_obs), xi_sum (K, K), sum_t ln c_t, status)`` with status 0 on
    success, 1 if the scaled vectors failed (the caller falls back).
    """
    K, n_obs = E.shape
    gamma = np.empty((K, n_obs))
    alpha = np.empty((n_obs, K))  # the normalised forward vectors, time-major
    xi_sum = np.zeros((K, K))
    AT = np.ascontiguousarray(A.T)
    nxt = np.empty(K)
    tmp = np.empty(K)
    beta = np.empty(K)
    log_c = 0.0
    scale = 1.0  # running product of the c_t, moved into log_c before it leaves range
    for s in range(starts.shape[0]):
        t0 = starts[s]
        last = t0 + lengths[s] - 1
        # forward: alpha_t = (alpha_{t-1} A) * E_t / c_t, with alpha_{-1} A read as pi
        for t in range(t0, last + 1):
            if t == t0:
                for j in range(K):
                    nxt[j] = pi[j]
            else:
                for j in range(K):
                    nxt[j] = 0.0
                for i in range(K):
                    ai = alpha[t - 1, i]
                    for j in range(K):
                        nxt[j] += ai * A[i, j]
            c = 0.0
            for j in range(K):
                v = nxt[j] * E[j, t]
                alpha[t, j] = v
                c += v
            if not c > 0.0:
                return gamma, xi_sum, 0.0, 1
            inv = 1.0 / c
            for j in range(K):
                alpha[t, j] *= inv
            scale *= c
            if scale < 1e-280 or scale > 1e280:
                log_c += np.log(scale)
                scale = 1.0
        # backward: beta_{t-1} = A (E_t * beta_t), divided by its sum; at every step
        # gamma_{t-1} = alpha_{t-1} * beta_{t-1} / g and
        # xi_t(i, j) = alpha_{t-1}(i) A_ij E_t(j) beta_t(j) / g (g: the sum of either)
        for k in range(K):
            beta[k] = 1.0
            gamma[k, last] = alpha[last, k]  # beta = 1 and sum_k alpha_last(k) = 1
        for t in range(last, t0, -1):
            for j in range(K):
                tmp[j] = E[j, t] * beta[j]
            for i in range(K):
                nxt[i] = 0.0
            for j in range(K):
                tj = tmp[j]
                for i in range(K):
                    nxt[i] += AT[j, i] * tj
            g = 0.0
            b = 0.0
            for i in range(K):
                g += alpha[t - 1, i] * nxt[i]
                b += nxt[i]
            if not (b > 0.0 and g > _G_MIN * b):
                return gamma, xi_sum, 0.0, 1
            inv = 1.0 / g
            for i in range(K):
                ai = alpha[t - 1, i] * inv
                gamma[i, t - 1] = ai * nxt[i]
                for j in range(K):
                    xi_sum[i, j] += ai * A[i, j] * tmp[j]
            inv = 1.0 / b
            for i in range(K):
                beta[i] = nxt[i] * inv
    return gamma, xi_sum, log_c + np.log(scale), 0


def _viterbi_py(log_pi, log_A, log_E, starts, lengths, back, path, log_prob):
    """Viterbi for the sequences ``log_E[s:s + n]`` (time-major (n_obs, K)).

    Writes the most probable paths into ``path`` (n_obs,) and ``max_Z ln p(V, Z)`` of each
    sequence into ``log_prob``; ``back`` (n_obs, K) holds the back-pointers. Ties go to the
    lowest state index, as with ``numpy.argmax``. Returns 0 (status, as the other kernel).
    """
    K = log_E.shape[1]
    delta = np.empty(K)
    new = np.empty(K)
    for s in range(starts.shape[0]):
        t0 = starts[s]
        last = t0 + lengths[s] - 1
        for k in range(K):
            delta[k] = log_pi[k] + log_E[t0, k]
        for t in range(t0 + 1, last + 1):
            for j in range(K):
                best = delta[0] + log_A[0, j]
                arg = 0
                for i in range(1, K):
                    v = delta[i] + log_A[i, j]
                    if v > best:
                        best = v
                        arg = i
                back[t, j] = arg
                new[j] = best + log_E[t, j]
            for j in range(K):
                delta[j] = new[j]
        state = 0
        for k in range(1, K):
            if delta[k] > delta[state]:
                state = k
        log_prob[s] = delta[state]
        path[last] = state
        for t in range(last, t0, -1):
            state = back[t, state]
            path[t - 1] = state
    return 0


def _compile():
    global _kernels
    if _kernels is None:
        numba = _numba()

        def build(cache: bool):
            jit = numba.njit(cache=cache, nogil=True, error_model="numpy")
            return jit(_posterior_py), jit(_viterbi_py)

        try:
            _kernels = build(cache=True)
        except RuntimeError:  # no writable place for the cache: compile in every session
            _kernels = build(cache=False)
    return _kernels


def _frozen(a, dtype) -> np.ndarray:
    """A read-only, C-contiguous view (a copy only if needed): every call then has the same
    argument types, so numba compiles one machine-code version per kernel, not one per mix
    of writable and read-only inputs."""
    a = np.ascontiguousarray(a, dtype=dtype).view()
    a.setflags(write=False)
    return a


def _call(which: int, *args):
    """Run kernel ``which``; if numba fails to compile it, switch the kernels off (the numpy
    paths then run) and return None."""
    try:
        return _compile()[which](*args)
    except Exception as exc:  # numba's errors have no common base class
        import numba  # enabled() has imported it already

        if not isinstance(exc, (numba.core.errors.NumbaError, RuntimeError)):
            raise
        _state["enabled"] = False
        import warnings

        warnings.warn(f"numba could not compile emtutor's kernels, the numpy paths run "
                      f"instead: {exc}", RuntimeWarning, stacklevel=3)
        return None


def posterior_kernel(pi, A, E, starts, lengths):
    """Compiled E-step of every sequence in ``E`` (K, n_obs): ``(gamma (K, n_obs), xi_sum,
    sum ln c_t)``, or ``None`` if the kernels are off or the scaled vectors failed (then the
    numpy paths run, and decide what is wrong)."""
    if not enabled():
        return None
    found = _call(0, _frozen(pi, float), _frozen(A, float), _frozen(E, float),
                  _frozen(starts, np.intp), _frozen(lengths, np.intp))
    if found is None or found[3]:
        return None
    return found[0], found[1], found[2]


def viterbi_kernel(log_pi, log_A, log_E, starts, lengths):
    """Compiled Viterbi of every sequence in ``log_E`` (n_obs, K): ``(paths (n_obs,),
    log_prob (N,))``, or ``None`` if the kernels are off (then the numpy paths run)."""
    if not enabled():
        return None
    n_obs, K = np.shape(log_E)
    back = np.empty((n_obs, K), dtype=np.int32 if K > 127 else np.int8)
    path = np.empty(n_obs, dtype=np.intp)
    log_prob = np.empty(len(starts))
    done = _call(1, _frozen(log_pi, float), _frozen(log_A, float), _frozen(log_E, float),
                 _frozen(starts, np.intp), _frozen(lengths, np.intp), back, path, log_prob)
    return None if done is None else (path, log_prob)
