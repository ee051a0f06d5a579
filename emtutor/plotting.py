"""Small plotting helpers shared by the chapters of the course."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["show"]


def show(fig: Any, *, dpi: int = 96) -> None:
    """Display a matplotlib figure as a PNG image in a notebook and close it.

    Unlike ``plt.show()`` in a notebook, the output holds only the image: no
    ``<Figure size ...>`` text, so a notebook's stored outputs stay comparable
    from one run to the next. Outside IPython the figure is only closed.

    At the default 96 dots per inch (the CSS pixel), a figure up to 7 inches wide
    fits the book's text column and is displayed at its natural size, so its font
    sizes read as set (10-point tick labels look like 10-point text).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to display.
    dpi : int, default 96
        Resolution of the PNG.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> show(fig)
    >>> plt.fignum_exists(fig.number)
    False
    """
    import matplotlib.pyplot as plt

    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: nothing to display into
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        display({"image/png": buffer.getvalue()}, raw=True)
    plt.close(fig)
