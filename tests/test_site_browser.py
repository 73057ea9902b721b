"""The built site in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from playwright.sync_api import Browser, sync_playwright

from tools import notebooks as nb

pytestmark = pytest.mark.heavy  # Chromium: make test-all and CI run it


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served_site(built_site: Path, site_port: int) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", site_port), handler)
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for this module's tests, closed when the module ends.

    Playwright's sync API keeps an event loop marked as running in this
    thread while it is open; a longer scope would break every async test
    that runs after it ("Runner.run() cannot be called from a running
    event loop").
    """
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
    anchored: set[str] = set()
    for path in site_pages(built_site):
        url = urljoin(served_site, "" if path == "." else f"{path}/")
        response = page.goto(url, wait_until="load")
        assert response is not None
        assert response.ok, url
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        ours = {h for h in hrefs if h.startswith(served_site)}
        links |= {h.split("#")[0] for h in ours}
        # "#__code_0_annotation_1" and the like are made by Material's script
        anchored |= {h for h in ours if "#" in h and "#__" not in h}
        blocks = page.locator(".md-content pre").count()
        copy_buttons = page.locator(".md-content pre button[data-md-type=copy]")
        assert copy_buttons.count() == blocks, f"{url}: a code block lacks copy"
    assert not errors
    broken = [link for link in sorted(links) if not reachable(link)]
    assert not broken
    missing_anchors = [link for link in sorted(anchored) if not has_anchor(link)]
    assert not missing_anchors
    downloads = {link for link in links if link.endswith(".ipynb")}
    assert {
        f"{served_site}notebooks/{s}.ipynb" for s in nb.section_stems()
    } <= downloads


def has_anchor(link: str) -> bool:
    url, _, anchor = link.partition("#")
    with urllib.request.urlopen(url, timeout=10) as reply:
        return f'id="{anchor}"' in reply.read().decode()


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


def test_highlights_and_annotations_render(served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(urljoin(served_site, "sessions/"), wait_until="load")
    highlighted = page.locator(".md-content .hll")
    assert 'scope="function"' in highlighted.first.inner_text()
    page.goto(served_site, wait_until="load")
    markers = page.locator(".md-content .md-annotation")
    assert markers.count() == 3
    markers.first.click()
    tooltip = page.locator(".md-tooltip--active")
    tooltip.first.wait_for(timeout=5_000)
    assert "serves this site" in tooltip.first.inner_text()


def test_the_palette_cycles_system_light_dark(served_site: str, browser: Browser):
    page = browser.new_page(color_scheme="light")
    page.goto(served_site, wait_until="load")

    def scheme() -> str:
        return str(page.evaluate("document.body.dataset.mdColorScheme"))

    assert scheme() == "default"  # "system", and the system is light
    seen = []
    for _ in range(3):
        page.locator("form[data-md-component=palette] label:visible").click()
        seen.append(scheme())
    assert seen == ["default", "slate", "default"]  # light, dark, system
    media = page.evaluate("document.body.dataset.mdColorMedia")
    assert media == "(prefers-color-scheme)"


def test_navigation_is_instant(served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(served_site, wait_until="networkidle")  # the sitemap is read
    page.evaluate("window.loadedOnce = true")
    page.locator(".md-nav__link", has_text="Pitfalls").first.click()
    page.wait_for_url("**/pitfalls/")
    # Instant navigation changes the URL first, then swaps the document in
    # (the title with it): a long page takes longer to arrive.
    page.wait_for_function("document.title.startsWith('Pitfalls')")
    assert page.evaluate("window.loadedOnce") is True  # no full page load


def test_search_suggests_the_rest_of_a_word(served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(served_site, wait_until="load")
    page.locator("input.md-search__input").click()
    page.keyboard.type("missi")
    page.wait_for_function(
        "document.querySelector('.md-search__suggest').textContent.length > 5"
    )
    suggestion = page.locator(".md-search__suggest").text_content() or ""
    assert suggestion.startswith("missi")
    assert "missinggreenlet".startswith(suggestion)


def test_tabs_switch_together_across_the_page(served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(urljoin(served_site, "pitfalls/"), wait_until="load")
    fixes = page.locator(".tabbed-set .tabbed-labels > label", has_text="Fix")
    assert fixes.count() >= 14
    fixes.first.click()
    for index in range(fixes.count()):
        label = fixes.nth(index)
        tab_set = label.locator("xpath=ancestor::div[contains(@class,'tabbed-set')]")
        chosen = tab_set.locator(".tabbed-content > .tabbed-block").nth(1)
        assert chosen.is_visible(), f"Fix tab {index} did not follow"


def test_admonitions_render(built_site: Path, served_site: str, browser: Browser):
    page = browser.new_page()
    page.goto(urljoin(served_site, "soft_delete/"), wait_until="load")
    warnings = page.locator(".md-content .admonition.warning")
    assert warnings.count() >= 3
    assert warnings.first.locator(".admonition-title").is_visible()
