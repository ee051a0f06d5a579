"""The built book as a reader sees it: every page opened in Chromium at 1280 px (and 1920 px).

Run after the book is built (``_build/html``); ``.ci/run`` does, with Debian's Chromium:

    .venv/bin/python -m pytest tests/browser

The pages are served from a local HTTP server and every request to any other host is
refused, so the test also proves that the pages need no network. For every page it
asserts:

* math: MathJax was loaded from the site, typeset every math element, and reported no
  error; no TeX source is left on the page;
* display equations: none is wider than the text column, none overlaps its number;
* figures: every image in a cell output sits in a numbered figure with a caption and
  alt text, and none is shrunk below 90 % of its natural width (tick labels drawn at
  10 points then read as at least 9 points);
* console: no error logged, no exception thrown;
* links: every link to a page of the book reaches an existing file, and every
  ``#fragment`` an element with that id;
* chapters: visible code is at most a fifth of the page's height.

It prints one line of these figures per page.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

HTML = Path(__file__).resolve().parents[2] / "_build" / "html"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
MAX_CODE_FRACTION = 0.20
MIN_IMAGE_SCALE = 0.90
WIDTHS = (1280, 1920)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

if not (HTML / "index.html").exists():
    pytest.fail(f"no built book in {HTML}: run `python3 tasks.py book` first", pytrace=False)
if not Path(CHROMIUM).exists():
    pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)", pytrace=False)

PAGES = sorted(
    str(p.relative_to(HTML))
    for p in HTML.rglob("*.html")
    if not p.relative_to(HTML).parts[0].startswith(("_", "."))
    and p.name not in {"genindex.html", "search.html", "py-modindex.html", "prf-prf.html"}
    and p.parent != HTML  # index.html only redirects to the intro
)
CHAPTERS = [p for p in PAGES if re.match(r"book/\d\d_", p)]

# Resolves when MathJax (if the page loads it) has typeset the page; at most 30 s.
WAIT_FOR_MATHJAX = """
async () => {
  if (!document.querySelector('script[src*="mathjax"]')) return;
  for (let i = 0; i < 300; i++) {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) break;
    await new Promise(r => setTimeout(r, 100));
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
}
"""

# Everything measured on a page, in one script.
MEASURE = """
() => {
  const article = document.querySelector('article.bd-article') || document.body;
  const column = article.getBoundingClientRect();
  // Shown to the reader: not inside a folded <details> (hide-input cells, dropdowns),
  // which Chromium still lays out with a height.
  const visible = el => el.getBoundingClientRect().height > 0 &&
    !el.closest('details:not([open])') && !el.closest('.toggle-hidden') &&
    (!el.checkVisibility || el.checkVisibility({visibilityProperty: true}));

  const mathElems = [...article.querySelectorAll('div.math, span.math')];
  const untypeset = mathElems.filter(m => !m.querySelector('mjx-container')).length;
  const errors = article.querySelectorAll('mjx-merror, [data-mjx-error]').length;
  const rawTex = [...article.querySelectorAll('p, li, td, figcaption')]
    .filter(el => /\\\\\\(|\\\\\\[|\\$\\$/.test(el.textContent)).length;

  const displays = [...article.querySelectorAll('div.math')].filter(visible);
  const wide = [], overlap = [];
  for (const d of displays) {
    const math = d.querySelector('mjx-container mjx-math') || d.querySelector('mjx-container');
    if (!math) continue;
    const m = math.getBoundingClientRect();
    const container = d.querySelector('mjx-container');
    const label = (d.querySelector('.eqno') || {}).textContent || d.id || '(unnumbered)';
    if (m.right > column.right + 1 || m.left < column.left - 1 ||
        container.scrollWidth > container.clientWidth + 1) {
      wide.push(label.replace('#', '').trim());
    }
    const eqno = d.querySelector('.eqno');
    if (eqno) {
      const n = eqno.getBoundingClientRect();
      const vertical = n.top < m.bottom && m.top < n.bottom;
      if (vertical && m.right > n.left - 2) overlap.push(label.replace('#', '').trim());
    }
  }

  const images = [...article.querySelectorAll('.cell_output img, figure img')];
  const uncaptioned = images.filter(img => {
    const fig = img.closest('figure');
    return !fig || !fig.querySelector('figcaption') ||
      !(fig.querySelector('.caption-number')) ||
      !img.alt || /\\.(png|svg|jpg)$/i.test(img.alt) || img.alt.includes('/');
  }).length;
  const shrunk = images.filter(img => img.naturalWidth > 0 &&
    img.clientWidth / img.naturalWidth < MIN_SCALE).length;

  const codeHeight = [...article.querySelectorAll('.cell_input')].filter(visible)
    .reduce((h, el) => h + el.getBoundingClientRect().height, 0);
  const pageHeight = article.getBoundingClientRect().height;

  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return {math: mathElems.length, displays: displays.length, untypeset, errors, rawTex,
          wide, overlap, images: images.length, uncaptioned, shrunk,
          codeFraction: pageHeight ? codeHeight / pageHeight : 0, links, ids,
          mathjax: [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s))};
}
""".replace("MIN_SCALE", str(MIN_IMAGE_SCALE))


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def open_page(browser, server: str, page_name: str, width: int):
    """Load a page with all outside requests refused; return (page, measurements, problems)."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    outside, console = [], []

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.goto(f"{server}/{page_name}", wait_until="load")
    page.evaluate(WAIT_FOR_MATHJAX)
    data = page.evaluate(MEASURE)
    context.close()
    return data, outside, console


def target_ids(path: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', path.read_text(encoding="utf-8")))


@functools.cache
def ids_of(path: str) -> frozenset[str]:
    return frozenset(target_ids(Path(path)))


def dead_links(page_name: str, links: list[str], own_ids: list[str]) -> list[str]:
    here = HTML / page_name
    dead = []
    for href in links:
        parsed = urlparse(href)
        if parsed.scheme in ("http", "https", "mailto", "javascript") or href.startswith("//"):
            continue
        target, fragment = urldefrag(href)
        if not target:
            if fragment and unquote(fragment) not in own_ids:
                dead.append(href)
            continue
        path = (here.parent / unquote(target)).resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            dead.append(href)
        elif fragment and path.suffix == ".html" and unquote(fragment) not in ids_of(str(path)):
            dead.append(href)
    return dead


RESULTS: dict[str, str] = {}


@pytest.mark.parametrize("page_name", PAGES)
def test_page_reads_well(browser, server, page_name):
    problems = []
    for width in WIDTHS:
        data, outside, console = open_page(browser, server, page_name, width)
        tag = f"at {width} px"
        if data["math"] and not any("_static/mathjax/" in s for s in data["mathjax"]):
            problems.append(f"MathJax is not served by the site: {data['mathjax']}")
        if outside:
            problems.append(f"{len(outside)} requests to other hosts, e.g. {outside[0]}")
        if data["untypeset"]:
            problems.append(f"{data['untypeset']} math elements not typeset {tag}")
        if data["errors"]:
            problems.append(f"{data['errors']} MathJax errors")
        if data["rawTex"]:
            problems.append(f"{data['rawTex']} paragraphs show raw TeX")
        if data["wide"]:
            problems.append(f"equations wider than the column {tag}: {data['wide']}")
        if data["overlap"]:
            problems.append(f"equations running under their number {tag}: {data['overlap']}")
        if data["uncaptioned"]:
            problems.append(f"{data['uncaptioned']} output images without number, caption or alt")
        if data["shrunk"]:
            problems.append(f"{data['shrunk']} images shrunk below {MIN_IMAGE_SCALE:.0%} {tag}")
        if console:
            problems.append(f"console errors: {console[:3]}")
        if width == WIDTHS[0]:
            dead = dead_links(page_name, data["links"], data["ids"])
            if dead:
                problems.append(f"{len(dead)} dead links, e.g. {dead[:3]}")
            fraction = data["codeFraction"]
            if page_name in CHAPTERS and fraction > MAX_CODE_FRACTION:
                problems.append(f"visible code is {fraction:.0%} of the page height")
            first = data
    line = (
        f"{page_name:40s} math {first['math']:5d}  displays {first['displays']:3d}  "
        f"wide/overlap {len(first['wide']):2d}/{len(first['overlap']):2d}  "
        f"images {first['images']:2d} (uncaptioned {first['uncaptioned']}, "
        f"shrunk {first['shrunk']})  code {first['codeFraction']:5.1%}  "
        f"{'ok' if not problems else 'FAIL'}"
    )
    RESULTS[page_name] = line
    print("\n" + line)
    assert not problems, f"{page_name}: " + "; ".join(problems)


def teardown_module(module):
    if RESULTS:
        print("\n\nThe book in the browser, page by page (at 1280 px):")
        for name in PAGES:
            if name in RESULTS:
                print(RESULTS[name])


# The article's equations (1)-(7) and their labels in the book (DESIGN.md).
STORY = {1: "eq-sigmoid", 2: "eq-loglik-iid", 3: "eq-loglik-logistic", 4: "eq-gradient-ascent",
         5: "eq-latent-loglik", 6: "eq-elbo-kl", 7: "eq-bound-after-estep"}


def book_numbers() -> dict[str, str]:
    """Equation label -> the number the built book shows, e.g. "(4.8)"."""
    numbers = {}
    for page in HTML.joinpath("book").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        for label, number in re.findall(
            r'id="equation-([\w-]+)">\s*<span class="eqno">\((\d+\.\d+)\)', text
        ):
            numbers[label] = f"({number})"
    return numbers


def test_the_readme_quotes_the_books_equation_numbers():
    numbers = book_numbers()
    readme = (HTML.parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| \((\d)\) \|.*\| (\(\d+\.\d+\)) ", readme, re.M))
    assert sorted(map(int, rows)) == sorted(STORY), "README needs a row for each of (1)-(7)"
    wrong = {n: (rows[str(n)], numbers.get(label)) for n, label in STORY.items()
             if rows[str(n)] != numbers.get(label)}
    assert not wrong, f"README equation numbers differ from the book's: {wrong}"
