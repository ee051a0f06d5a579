"""Small fixes to the book's HTML pages, as a local Sphinx extension.

* sphinx-thebe and sphinx-togglebutton register their inline scripts twice (once with
  no file name, once with an empty one), so every page declared ``THEBE_JS_URL`` twice
  and the browser logged a SyntaxError: keep one copy of every script.
* MathJax is served from the built site (``_static/mathjax``, copied there by the
  ``sphinx-mathjax-offline`` extension), never from a CDN: the pages must render their
  mathematics offline. A page that still points elsewhere fails the build.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _key(script) -> tuple:
    """What makes two scripts the same: file and attributes (a body is an attribute).

    The same inline script is registered once with ``filename=None`` and once with
    ``filename=""``, which Sphinx's own de-duplication tells apart.
    """
    attributes = getattr(script, "attributes", {})
    return (getattr(script, "filename", None) or "", tuple(sorted(attributes.items())))


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def check_mathjax_path(app: Sphinx) -> None:
    path = str(app.config.mathjax_path)
    if "://" in path:
        raise RuntimeError(
            f"mathjax_path is {path!r}: the book must serve MathJax itself "
            "(add the sphinx-mathjax-offline extension)"
        )


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("builder-inited", check_mathjax_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
