"""Check the built documentation site (``make docs``: site/) in a real headless browser, Debian's ``chromium``.

    python scripts/check_docs.py site --screenshot /tmp/docs

1. **Links** (static): on every page, every link and resource inside the site resolves to a built file, and every
   ``#anchor`` to an ``id`` on its page; no script, stylesheet, image or font is fetched from outside the site (links
   to other sites are fine).
2. **Pages** (browser): the site is served on 127.0.0.1 by a throwaway HTTP server that adds a probe script to each
   page; ``chromium --headless --dump-dom`` opens it, and after the load event the probe records every image that
   did not decode, every resource error, and the navigation links it shows. The check fails on a broken image, a
   resource error, or a page without the site's navigation.
3. **Search**: ``index.html?q=WORD`` opens Material's search with the query; the probe waits for the results and the
   check fails unless ``--query`` finds at least one page.
4. ``--screenshot DIR``: PNGs of the home page, a results page and the search results, to look at.

Exit status 0 when every check passes, 1 with one line per problem otherwise, 2 when chromium cannot run.
Needs only the standard library (and ``chromium`` on PATH, or ``--chromium``), like scripts/check_report.py.
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the same browser flags, probe start and reading as the report's check
from check_report import MAX_HEIGHT, PROBE_ERRORS, _chromium, find_chromium, probe_result  # noqa: E402

PROBE = (
    "<script>(function () {"
    + PROBE_ERRORS
    + """
  function report() {
    var imgs = Array.prototype.slice.call(document.images).filter(function (i) { return i.id !== 'smvi-wait'; });
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.src.slice(-60); });
    var results = document.querySelectorAll('.md-search-result__item');
    var meta = document.querySelector('.md-search-result__meta');
    var out = document.createElement('pre');
    out.id = 'smvi-check';
    out.style.display = 'none';  // read from the DOM, not shown in screenshots
    out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: errors,
      nav: document.querySelectorAll('nav.md-nav--primary a.md-nav__link').length,
      title: document.title, search: results.length, search_meta: meta ? meta.textContent : null,
      height: document.documentElement.scrollHeight});
    document.body.appendChild(out);
  }
  window.addEventListener('load', function () { setTimeout(report, 100); });
})();</script>"""
)
# Material's search runs in a web worker, in real time, while chromium's --virtual-time-budget runs the page's clock
# ahead. So the search probe holds the load event back with one image that the server sends after this many real
# milliseconds (virtual time waits for the network), and the search has answered by then.
SEARCH_WAIT_MS = 4000
WAIT_IMAGE = '<img id="smvi-wait" alt="" src="/__smvi_wait.png" style="display:none">'
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class _Links(HTMLParser):
    """A page's ids and its references: (tag, attribute, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name in ("src", "href") and value is not None:
                self.refs.append((tag, name, value))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def pages_of(site: Path) -> list[Path]:
    """Every HTML page of the site, the 404 page aside."""
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def _target(site: Path, page: Path, path: str) -> Path | None:
    """The file a relative URL path on ``page`` names (a directory: its index.html), or None if none is built."""
    target = (page.parent / unquote(path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() and target.is_relative_to(site.resolve()) else None


def link_problems(site: Path) -> list[str]:
    """Broken links and anchors inside the site, and resources fetched from outside it."""
    problems, parsed = [], {}
    for page in pages_of(site):
        parsed[page.resolve()] = _parse(page)
    for page, links in parsed.items():
        name = page.relative_to(site.resolve()).as_posix()
        for tag, attr, value in links.refs:
            url = urlsplit(value)
            if url.scheme or url.netloc:
                if not (tag == "a" and url.scheme in ("http", "https", "mailto")):
                    problems.append(f"{name}: <{tag} {attr}> fetches from outside the site: {value[:80]}")
                continue
            if value.startswith("data:"):
                continue
            target = _target(site, page, url.path) if url.path else page
            if target is None:
                problems.append(f"{name}: <{tag} {attr}={value!r}> names no built file")
            elif url.fragment and target.suffix == ".html":
                ids = parsed.get(target) or _parse(target)
                if unquote(url.fragment) not in ids.ids:
                    problems.append(f"{name}: link {value!r}: no anchor #{url.fragment} there")
    return problems


class _Handler(SimpleHTTPRequestHandler):
    """Serves the site, with the probe added to each HTML page (the files themselves are not touched)."""

    wait = "0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def send_head(self):
        if self.path == "/__smvi_wait.png":
            import io
            import time

            time.sleep(int(self.wait) / 1000)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PIXEL)))
            self.end_headers()
            return io.BytesIO(PIXEL)
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"<head>", lambda m: m.group() + PROBE, text, count=1)
        if self.wait != "0":
            text = re.sub(r"<body[^>]*>", lambda m: m.group() + WAIT_IMAGE, text, count=1)
        body = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io

        return io.BytesIO(body)


class Server:
    """The site on http://127.0.0.1:PORT/ for as long as the ``with`` block lasts."""

    def __init__(self, site: Path, wait_ms: int) -> None:
        handler = type("Handler", (_Handler,), {"wait": str(wait_ms)})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self) -> Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def probe(binary: str, url: str, width: int = 1280) -> dict:
    """What the probe saw at ``url``."""
    return probe_result(_chromium(binary, "--dump-dom", f"--window-size={width},1000", url), f" for {url}")


def page_problems(binary: str, site: Path, pages: list[Path]) -> tuple[list[str], dict[str, dict]]:
    """Broken images, resource errors and missing navigation of each page in chromium; and what was seen."""
    problems, seen = [], {}
    with Server(site, 0) as server:
        for page in pages:
            name = page.relative_to(site).as_posix()
            got = seen[name] = probe(binary, server.url + name)
            problems += [f"{name}: image did not load: {b}" for b in got["broken"]]
            problems += [f"{name}: resource error: {e}" for e in got["errors"]]
            if got["nav"] < 5:
                problems.append(f"{name}: shows {got['nav']} navigation links")
    return problems, seen


def search_problems(binary: str, site: Path, query: str) -> tuple[list[str], dict]:
    """The search box, opened with ``query``, must list at least one result."""
    with Server(site, SEARCH_WAIT_MS) as server:
        got = probe(binary, f"{server.url}index.html?q={query}")
    problems = [] if got["search"] > 0 else [f"search for {query!r} found nothing ({got['search_meta']!r})"]
    return problems, got


def screenshots(binary: str, site: Path, out: Path, query: str, width: int = 1280) -> list[Path]:
    """The home page, the paper's results page (full height) and the search results for ``query``."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with Server(site, SEARCH_WAIT_MS) as server:
        for name, path, height in (
            ("home", "index.html", 1400),
            ("results-paper", "results/paper/index.html", None),
            ("search", f"index.html?q={query}", 900),
        ):
            if height is None:
                height = min(probe(binary, server.url + path, width)["height"], MAX_HEIGHT)
            shot = (out / f"{name}.png").resolve()
            _chromium(binary, f"--screenshot={shot}", f"--window-size={width},{height}", server.url + path)
            if not shot.is_file():
                raise RuntimeError(f"chromium wrote no screenshot of {path}")
            shots.append(shot)
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, nargs="?", default=Path("site"), help="the built site [site]")
    ap.add_argument("--query", default="score matching", help="what to search for [score matching]")
    ap.add_argument(
        "--pages", default=None, help="comma-separated pages to open in the browser, e.g. index.html [every page]"
    )
    ap.add_argument("--screenshot", type=Path, default=None, help="write home.png, results-paper.png, search.png here")
    ap.add_argument("--chromium", default=None, help="the browser binary [chromium on PATH]")
    a = ap.parse_args(argv)
    site = a.site.resolve()
    if not (site / "index.html").is_file():
        print(f"{a.site}: no index.html (build the site first: make docs)", file=sys.stderr)
        return 1
    problems = link_problems(site)
    binary = find_chromium(a.chromium)
    if binary is None:
        print("chromium not found: apt-get install chromium (or pass --chromium)", file=sys.stderr)
        return 2
    pages = [site / p for p in a.pages.split(",")] if a.pages else pages_of(site)
    try:
        found, seen = page_problems(binary, site, pages)
        problems += found
        found, searched = search_problems(binary, site, a.query.replace(" ", "+"))
        problems += found
        shots = screenshots(binary, site, a.screenshot, a.query.replace(" ", "+")) if a.screenshot else []
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"chromium could not check {a.site}: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    if not problems:
        images = sum(s["images"] for s in seen.values())
        print(
            f"{a.site}: {len(pages)} pages opened, {images} images loaded, links and anchors resolve, nothing "
            f"fetched from outside; search {a.query!r}: {searched['search']} results shown"
            + (f"; screenshots {', '.join(str(s) for s in shots)}" if shots else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
