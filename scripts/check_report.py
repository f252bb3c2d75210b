"""Check a report.html in a real headless browser (Debian's ``chromium``): every image loads, nothing is fetched.

    python scripts/check_report.py runs/quick/report/report.html --screenshot /tmp/report.png

1. **Static**: the page refers to nothing outside itself -- every ``<img>`` is an inline ``data:image/png;base64``
   PNG that decodes (PNG signature, width and height > 0), and no ``src``/``href``/``url()`` points to a file or the
   network (links to ``#anchors`` are fine).
2. **Browser**: a copy of the page with a probe script is opened with ``chromium --headless --dump-dom``; after the
   load event the probe records every image that did not decode (``complete`` and ``naturalWidth > 0``) and every
   resource error event, and writes them into the DOM, which the script reads back. The check fails on any broken
   image, any resource error, or an image count that differs from the static one.
3. ``--screenshot PATH``: a full-page PNG (``--screenshot`` at the page's measured height, at most 16384 px) to look
   at.

Exit status 0 when every check passes, 1 with one line per problem otherwise, 2 when chromium cannot run.
Needs only the standard library (and ``chromium`` on PATH, or ``--chromium``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

PROBE_ERRORS = """
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target || {};
    errors.push((t.tagName || 'page') + ' ' + (t.src || t.href || e.message || '?').slice(0, 80));
  }, true);"""
"""The start of a probe script (this one's and scripts/check_docs.py's): every resource error, in ``errors``."""
PROBE = (
    "<script>(function () {"
    + PROBE_ERRORS
    + """
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.src.slice(0, 60); });
    var out = document.createElement('pre');
    out.id = 'smvi-check';
    out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: errors,
      sizes: imgs.map(function (i) { return [i.alt, i.naturalWidth, i.naturalHeight]; }),
      height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
      details: document.querySelectorAll('details').length});
    document.body.appendChild(out);
  });
})();</script>"""
)
MAX_HEIGHT = 16384  # px: the tallest screenshot taken


class _Refs(HTMLParser):
    """Every resource reference of a page: (tag, attribute, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data") and value is not None:
                self.refs.append((tag, name, value))


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR; None if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def static_problems(page: str) -> tuple[int, list[str]]:
    """(number of images, problems) of the page's own text: external references and images that are not decodable
    inline PNGs."""
    parser = _Refs()
    parser.feed(page)
    problems, images = [], 0
    for tag, attr, value in parser.refs:
        if tag == "img" and attr == "src":
            images += 1
            head, _, payload = value.partition(",")
            if head != "data:image/png;base64":
                problems.append(f"image not embedded as a PNG: {value[:60]}")
                continue
            try:
                size = _png_size(base64.b64decode(payload, validate=True))
            except ValueError:
                size = None
            if not size or min(size) <= 0:
                problems.append(f"embedded image does not decode as a PNG ({value[:40]}...)")
        elif attr == "href" and (value.startswith("#") or tag == "a" and value.startswith(("http:", "https:"))):
            continue  # in-page anchors; an outbound link fetches nothing
        else:
            problems.append(f"<{tag} {attr}=...> refers to an outside resource: {value[:60]}")
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", page):
        if not url.startswith("data:"):
            problems.append(f"CSS url() refers to an outside resource: {url[:60]}")
    return images, problems


def find_chromium(given: str | None = None) -> str | None:
    """The chromium binary: ``given``, else ``chromium`` or ``chromium-browser`` on PATH; None if none."""
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ]
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *flags, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
        )


def probe_result(r: subprocess.CompletedProcess, where: str = "") -> dict:
    """What the probe wrote into the page (the ``<pre id="smvi-check">`` of chromium's dumped DOM); a RuntimeError,
    naming ``where``, if it is not there."""
    found = re.search(r'<pre id="smvi-check"[^>]*>(.*?)</pre>', r.stdout, flags=re.S)
    if not found:
        raise RuntimeError(f"chromium gave no probe result{where} (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    return json.loads(html.unescape(found.group(1)))


def browser_report(binary: str, page: Path, width: int = 1280) -> dict:
    """What the probe saw in chromium at ``width`` px: image count, broken images, resource errors, page size."""
    text = page.read_text(encoding="utf-8")
    probed = re.sub(r"<head>", lambda m: m.group() + PROBE, text, count=1) if "<head>" in text else PROBE + text
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(probed, encoding="utf-8")
        r = _chromium(binary, "--dump-dom", f"--window-size={width},1000", copy.as_uri())
    return probe_result(r)


def screenshot(binary: str, page: Path, out: Path, width: int, height: int) -> None:
    """A PNG of ``page`` at ``width`` × ``height`` (the page's full height from :func:`browser_report`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    r = _chromium(
        binary,
        f"--screenshot={out.resolve()}",
        f"--window-size={width},{min(height, MAX_HEIGHT)}",
        page.resolve().as_uri(),
    )
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr.strip()[-300:]}")


def check(page: Path, binary: str, shot: Path | None = None, width: int = 1280) -> list[str]:
    """Every problem found (empty: the page passes); writes the screenshot when ``shot`` is given."""
    images, problems = static_problems(page.read_text(encoding="utf-8"))
    seen = browser_report(binary, page, width)
    problems += [f"image did not load in chromium: {b}" for b in seen["broken"]]
    problems += [f"resource error in chromium: {e}" for e in seen["errors"]]
    if seen["images"] != images:
        problems.append(f"chromium shows {seen['images']} images, the page holds {images}")
    if shot is not None:
        screenshot(binary, page, shot, width, seen["height"])
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report.html written by smvi report")
    ap.add_argument("--screenshot", type=Path, default=None, help="write a full-page PNG here")
    ap.add_argument("--width", type=int, default=1280, help="window width for the screenshot [1280]")
    ap.add_argument("--chromium", default=None, help="the browser binary [chromium on PATH]")
    a = ap.parse_args(argv)
    binary = find_chromium(a.chromium)
    if binary is None:
        print("chromium not found: apt-get install chromium (or pass --chromium)", file=sys.stderr)
        return 2
    if not a.report.is_file():
        print(f"{a.report}: no such file", file=sys.stderr)
        return 1
    try:
        problems = check(a.report, binary, a.screenshot, a.width)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"chromium could not check {a.report}: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    if not problems:
        print(
            f"{a.report}: every image embedded and loaded, no outside resource"
            + (f"; screenshot {a.screenshot}" if a.screenshot else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
