"""emtutor: the companion package of the course on the Expectation-Maximization algorithm.

Modules
-------
logistic   logistic regression: the observed-feature case (chapter 1)
bounds     equations 5 and 6 for a discrete latent variable per data point
em         the generic EM driver with a full trace, the stopping rule and its warnings
coins      the two-coin binomial mixture
gmm        Gaussian mixtures (also with missing entries, and on dask arrays)
incremental  incremental and online (stepwise) EM for Gaussian mixtures
hmm        hidden Markov models
missing    a multivariate normal with missing entries
bernoulli  mixtures of multivariate Bernoullis (binary images)
testing    checkers for your own EM implementation
plotting   the helper that displays the course's figures
"""

from emtutor import (
    bernoulli,
    bounds,
    coins,
    em,
    gmm,
    hmm,
    incremental,
    logistic,
    missing,
    plotting,
    testing,
)

__all__ = [
    "bernoulli", "bounds", "coins", "em", "gmm", "hmm", "incremental", "logistic", "missing",
    "plotting", "testing",
]
__version__ = "0.1.0"
