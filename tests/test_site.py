"""The site and the notebooks: strict builds, notebooks in sync and running."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import nbformat
import pytest
from nbclient import NotebookClient
from playwright.sync_api import Browser, sync_playwright

from tools import notebooks as nb
from tools.site_hooks import copy_notebooks

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_LINE = re.compile(r"^\s*#> ?(.*)$")
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_matches_its_page(stem: str):
    committed = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
    assert committed == nb.render(stem), "stale notebook: run `make notebooks`"


def expected_output(stem: str) -> list[str]:
    """The #> lines of the page's code, in page order."""
    blocks = nb.split_blocks(nb.expand_page(ROOT / "docs" / f"{stem}.md"))
    return [
        match.group(1)
        for block in blocks
        if block.kind == "code"
        for match in map(OUTPUT_LINE.match, block.lines)
        if match
    ]


async def execute(stem: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},  # any working directory
    )
    await client.async_execute()
    return notebook


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every notebook, run in a fresh kernel each, several at a time.

    Kernel start-up and imports dominate a notebook's run time, and they
    overlap well; a failure is kept and re-raised by that notebook's test.
    """
    stems = nb.section_stems()
    workdirs = {stem: tmp_path_factory.mktemp(stem) for stem in stems}

    async def run_all() -> list[object]:
        limit = asyncio.Semaphore(4)

        async def run_one(stem: str) -> nbformat.NotebookNode:
            async with limit:
                return await execute(stem, workdirs[stem])

        return await asyncio.gather(
            *(run_one(stem) for stem in stems), return_exceptions=True
        )

    results = asyncio.run(run_all())
    return {**dict(zip(stems, results, strict=True)), "workdirs": workdirs}


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_runs_and_prints_the_page_output(stem: str, executed):
    notebook = executed[stem]
    if isinstance(notebook, BaseException):
        raise notebook
    printed = [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
        for line in output.text.splitlines()
    ]
    assert printed == expected_output(stem)
    leftovers = list(executed["workdirs"][stem].iterdir())
    assert not leftovers, "a notebook must keep its files in a temporary directory"


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return site


def test_mkdocs_builds_strict(built_site: Path):
    for stem in nb.section_stems():
        assert (built_site / "notebooks" / f"{stem}.ipynb").is_file()
        assert (built_site / stem / "index.html").is_file()


def test_zensical_builds(tmp_path: Path):
    copy_notebooks()  # zensical ignores the mkdocs hook that does this
    build = tmp_path / "project"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".venv", ".git", "site"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "zensical"), "build", "--clean"],
        cwd=build,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = build / "site"
    for stem in nb.section_stems():
        assert (site / stem / "index.html").is_file()
        assert (site / "notebooks" / f"{stem}.ipynb").is_file()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def served_site(built_site: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("COOKBOOK_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


def site_pages(built_site: Path) -> list[str]:
    return sorted(
        str(p.relative_to(built_site).parent)
        for p in built_site.rglob("index.html")
        if "assets" not in p.parts
    )


def test_every_page_loads_without_console_errors_and_every_link_resolves(
    built_site: Path, served_site: str, browser: Browser
):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    links: set[str] = set()
    for path in site_pages(built_site):
        url = urljoin(served_site, "" if path == "." else f"{path}/")
        response = page.goto(url, wait_until="load")
        assert response is not None
        assert response.ok, url
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        links |= {h.split("#")[0] for h in hrefs if h.startswith(served_site)}
        blocks = page.locator(".md-content pre").count()
        copy_buttons = page.locator(".md-content pre button[data-md-type=copy]")
        assert copy_buttons.count() == blocks, f"{url}: a code block lacks copy"
    assert not errors
    broken = [link for link in sorted(links) if not reachable(link)]
    assert not broken
    downloads = {link for link in links if link.endswith(".ipynb")}
    assert {
        f"{served_site}notebooks/{s}.ipynb" for s in nb.section_stems()
    } <= downloads


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return bool(reply.status == 200)
    except urllib.error.URLError:
        return False


def test_search_finds_a_recipe_by_keyword(served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(served_site, wait_until="load")
    page.locator("input.md-search__input").click()
    page.keyboard.type("MissingGreenlet")  # keystrokes: search runs on keyup
    result = page.locator(".md-search-result__item").first
    result.wait_for(timeout=10_000)
    assert "Sessions" in page.locator(".md-search-result__list").inner_text()


def test_a_content_tab_switches(built_site: Path, served_site: str, browser: Browser):
    tabbed = [
        p
        for p in site_pages(built_site)
        if 'class="tabbed-set' in (built_site / p / "index.html").read_text()
    ]
    assert tabbed, "no page uses content tabs"
    page = browser.new_page()
    page.goto(urljoin(served_site, f"{tabbed[0]}/"), wait_until="load")
    tab_set = page.locator(".tabbed-set").first
    second = tab_set.locator(".tabbed-labels > label").nth(1)
    second.click()
    panel = tab_set.locator(".tabbed-content > .tabbed-block").nth(1)
    assert panel.is_visible()
    assert not tab_set.locator(".tabbed-content > .tabbed-block").first.is_visible()
