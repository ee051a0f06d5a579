"""emtutor: the companion package of the course on the Expectation-Maximization algorithm."""

__version__ = "0.1.0"
