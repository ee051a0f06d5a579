"""Small fixes to the book's HTML pages, as a local Sphinx extension.

* sphinx-thebe and sphinx-togglebutton register their inline scripts twice (once with
  no file name, once with an empty one), so every page declared ``THEBE_JS_URL`` twice
  and the browser logged a SyntaxError: keep one copy of every script.
* The bibliography is labelled the way the text cites, "Dempster et al., 1977", with the
  pybtex style ``authoryear`` registered here (``:style: authoryear`` on the page).
* NamedTuple fields are documented once, in their class's ``Attributes`` section, not
  again as "Alias for field number N".
* MathJax is served from the built site (``_static/mathjax``, copied there by the
  ``sphinx-mathjax-offline`` extension), never from a CDN: the pages must render their
  mathematics offline. A page that still points elsewhere fails the build.
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx


def author_year(entry) -> str:
    """"Misra, 2019", "Neal and Hinton, 1998", "Dempster et al., 1977" for a bib entry.

    The same names and years as sphinxcontrib-bibtex's ``author_year`` citations in the
    text, so a reader finds "[Misra, 2019]" in the list under that very label.
    """
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.last_names) for p in persons]
    if not last:
        names = entry.fields.get("title", entry.key)
    elif len(last) == 1:
        names = last[0]
    elif len(last) == 2:
        names = f"{last[0]} and {last[1]}"
    else:
        names = f"{last[0]} et al."
    return f"{names}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year(entry)


class AuthorYearStyle(UnsrtStyle):
    """The ``unsrt`` entry format, author-year labels, sorted by author, year and title."""

    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


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


def skip_namedtuple_fields(app: Sphinx, what: str, name: str, obj, skip: bool, options):
    """Leave out the "Alias for field number N" entries of NamedTuple fields.

    Every NamedTuple of ``emtutor`` documents its fields in the ``Attributes`` section of
    its docstring, which the page shows; the generated aliases would say nothing more.
    """
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


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
    app.connect("autodoc-skip-member", skip_namedtuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
