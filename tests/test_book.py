"""The rendered book: strict build, offline assets, and headless-Chromium checks.

The session fixture runs the README build command (``jupyter-book build --all -W -n --keep-going .``)
and fails with the log if Sphinx reports any warning. Set ``SEQUENCER_BOOK_PREBUILT=1`` to reuse a
current ``_build/html`` instead. The browser test serves ``_build/html`` on localhost and runs
``tests/browser/check_book.mjs`` (playwright-core + Debian's chromium); it is skipped with the
reason when chromium, node or ``tests/browser/node_modules`` is missing, unless
``SEQUENCER_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
HTML = BUILD / "html"
BROWSER_DIR = ROOT / "tests" / "browser"
BUILD_CMD = ["jupyter-book", "build", "--all", "-W", "-n", "--keep-going", "."]
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.browser


def _jupyter_book() -> list[str]:
    exe = shutil.which("jupyter-book")
    if exe:
        return [exe, *BUILD_CMD[1:]]
    return [sys.executable, "-m", "jupyter_book.cli.main", *BUILD_CMD[1:]]


@pytest.fixture(scope="session")
def built_book() -> Path:
    if os.environ.get("SEQUENCER_BOOK_PREBUILT") == "1":
        if not (HTML / "index.html").is_file():
            pytest.fail("SEQUENCER_BOOK_PREBUILT=1 but _build/html/index.html does not exist")
        return HTML
    start = time.perf_counter()
    proc = subprocess.run(_jupyter_book(), cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - start
    log = ANSI.sub("", proc.stdout + proc.stderr)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "build.log").write_text(log, encoding="utf-8")
    problems = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]
    if proc.returncode != 0 or problems:
        shown = "\n".join(problems[:60]) or log[-6000:]
        pytest.fail(f"strict book build failed (exit {proc.returncode}, {len(problems)} "
                    f"warnings/errors; full log in _build/build.log):\n{shown}", pytrace=False)
    (BUILD / "build_time.json").write_text(json.dumps({
        "command": " ".join(BUILD_CMD), "seconds": round(elapsed, 1), "cpus": os.cpu_count(),
    }) + "\n", encoding="utf-8")
    return HTML


def test_strict_build(built_book):
    assert (built_book / "index.html").is_file()
    assert (built_book / "book" / "00_intro.html").is_file()


def test_no_cdn_in_rendered_pages(built_book):
    offenders = {}
    pattern = re.compile(r"""<(script|link)[^>]+(src|href)=["'](https?:)?//[^"']+""")
    for page in built_book.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        found = [m.group(0) for m in pattern.finditer(text)]
        if found:
            offenders[str(page.relative_to(built_book))] = found[:3]
    assert not offenders, f"pages load scripts or styles from the network: {offenders}"


def test_widget_scripts_loaded_once_from_the_book(built_book):
    html = (built_book / "book" / "00_intro.html").read_text(encoding="utf-8")
    for script in ("requirejs/require.js", "widgets-compat/compat.js", "html-manager/embed-amd.js"):
        n = len(re.findall(rf'src="[^"]*_static/{re.escape(script)}', html))
        assert n == 1, f"{script} appears {n} times on the intro page"
    assert "application/vnd.jupyter.widget-state+json" in html
    for asset in ("requirejs/require.js", "html-manager/embed-amd.js", "mathjax/tex-mml-chtml.js"):
        assert (built_book / "_static" / asset).is_file(), asset


def test_inline_scripts_not_duplicated(built_book):
    html = (built_book / "book" / "setup.html").read_text(encoding="utf-8")
    assert html.count("const THEBE_JS_URL") <= 1


def test_license_in_footer(built_book):
    html = (built_book / "book" / "00_intro.html").read_text(encoding="utf-8")
    assert "creativecommons.org/licenses/by/4.0" in html
    assert "Apache-2.0" in html


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _serve(directory: Path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "index.html", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("http.server did not start")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _browser_missing() -> str | None:
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not (Path(chromium).exists() or shutil.which("chromium")):
        return f"chromium not found at {chromium} (Debian: apt-get install chromium)"
    if not shutil.which("node"):
        return "node not found (Debian: apt-get install nodejs npm)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules/playwright-core missing (run: npm ci --prefix tests/browser)"
    return None


def test_pages_in_headless_chromium(built_book):
    missing = _browser_missing()
    if missing:
        if os.environ.get("SEQUENCER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)
    out = BUILD / "browser"
    with _serve(built_book) as base:
        proc = subprocess.run(
            ["node", str(BROWSER_DIR / "check_book.mjs"), "--base", base, "--root", str(ROOT),
             "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800)  # every page twice (themes)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"browser checks failed:\n{report}"
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert any(p["widget_views"] for p in data["pages"]), "no page with widgets was checked"
    assert any(p["math"] for p in data["pages"]), "no page with math was checked"
    assert len(data["screenshots"]) >= 2, data["screenshots"]
    themed = {(t["doc"], t["theme"]) for t in data["themes"]}
    assert themed == {(p["doc"], theme) for p in data["pages"] for theme in ("light", "dark")}, (
        "every page must be screenshotted in the light and the dark theme")
    assert sum(t["panels"] for t in data["themes"]) > 0, "no figure or widget panel was measured in the dark theme"
