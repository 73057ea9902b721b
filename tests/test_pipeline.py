"""The one-source pipeline: snippets, pages, notebooks and site stay in step."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

from tools import nav as nav_tool
from tools import notebooks as nb
from tools import site_hooks

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "snippets"
DOCS = ROOT / "docs"
SECTIONS = nb.section_stems()
SNIPPET_FILES = sorted(p for p in SNIPPETS.rglob("*.py") if p.name != "__init__.py")
# Programs whose printed output is pinned: section modules, and packages' tours.
PROGRAMS = sorted(
    p
    for p in [*SNIPPETS.glob("*.py"), *SNIPPETS.glob("*/__main__.py")]
    if p.name != "__init__.py"
)
PAGES_WITHOUT_SECTION = {"index", "pitfalls", "performance"}
TESTS_WITHOUT_SECTION = {"pipeline", "site", "site_browser", "benchmarks", "matrix"}
MARKER = re.compile(r"^\s*# --8<-- \[(start|end):([\w-]+)\]\s*$")
INCLUDE = re.compile(r'^\s*--8<-- "([^":]+)(?::([\w-]+))?"\s*$')
STORY_FUNCTIONS = re.compile(r"^(main|demo_\w+)$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_section_has_its_four_views():
    pages = {p.stem for p in DOCS.glob("*.md")} - PAGES_WITHOUT_SECTION
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    modules = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    modules -= TESTS_WITHOUT_SECTION
    # tests/test_<stem>_<more>.py may add to a section's tests
    tests = {m for m in modules if m in SECTIONS}
    orphans = {
        m for m in modules - tests if not any(m.startswith(f"{s}_") for s in SECTIONS)
    }
    assert not orphans, "test modules that belong to no section"
    assert SECTIONS, "no sections found under snippets/"
    assert pages == set(SECTIONS), "docs/<section>.md per snippet, no orphan page"
    assert notebooks == set(SECTIONS), "run `make notebooks`"
    assert tests == set(SECTIONS), "tests/test_<section>.py per snippet"


def test_every_section_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert nav_tool.render_nav() in nav, "run `python -m tools.nav`"
    assert all(f"{stem}.md" in nav for stem in SECTIONS)


@pytest.mark.parametrize("stem", SECTIONS)
def test_every_section_page_offers_its_notebook_and_its_source(stem: str):
    page = (DOCS / f"{stem}.md").read_text()
    assert f"](notebooks/{stem}.ipynb){{ .md-button" in page
    package = (ROOT / "snippets" / stem).is_dir()
    source = f"{stem}.zip" if package else f"{stem}.py"
    assert f"](source/{source}){{ .md-button" in page


@pytest.mark.parametrize(
    "path", SNIPPET_FILES + sorted(ROOT.glob("tests/*.py")), ids=rel
)
def test_section_markers_are_balanced_and_unique(path: Path):
    open_sections: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = MARKER.match(line)
        if not match:
            malformed = line.lstrip().startswith("#") and "--8<--" in line
            assert not malformed, f"{rel(path)}:{number}: malformed marker"
            continue
        kind, name = match.groups()
        if kind == "start":
            assert name not in seen, f"{rel(path)}:{number}: [{name}] used twice"
            seen.add(name)
            open_sections.append(name)
        else:
            where = f"{rel(path)}:{number}: [end:{name}]"
            assert open_sections, f"{where} closes nothing"
            assert open_sections[-1] == name, f"{where} closes another section"
            open_sections.pop()
    assert not open_sections, f"{rel(path)}: unclosed {open_sections}"


def includes() -> list[tuple[Path, int, str, str | None]]:
    """Every section a page shows: included, or highlighted inside an include."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            match = INCLUDE.match(line)
            if match:
                found.append((page, number, match.group(1), match.group(2)))
        for match in site_hooks.HL_FENCE.finditer(page.read_text()):
            found.append((page, 0, match["file"], match["inner"]))
    return found


def test_every_highlighted_section_lies_inside_its_include():
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in site_hooks.HL_FENCE.finditer(text):
            path = ROOT / match["file"]
            lines = site_hooks.section_lines(path, match["outer"], match["inner"])
            assert lines == list(range(lines[0], lines[-1] + 1)), match["inner"]
        highlighted = site_hooks.highlight_sections(text)
        assert "hl_section" not in highlighted, f"{rel(page)}: unresolved hl_section"
        assert "hl_lines" not in text, f"{rel(page)}: highlight by section, not number"


def test_every_include_names_an_existing_file_and_section():
    problems = []
    for page, number, target, section in includes():
        path = ROOT / target
        if not path.is_file():
            problems.append(f"{rel(page)}:{number}: no file {target}")
        elif section and f"# --8<-- [start:{section}]" not in path.read_text():
            problems.append(f"{rel(page)}:{number}: no section {target}:{section}")
    assert not problems


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=rel)
def test_every_snippet_section_is_shown_on_a_page(path: Path):
    shown = {(t, s) for _, _, t, s in includes()}
    sections = {
        m.group(2) for m in map(MARKER.match, path.read_text().splitlines()) if m
    }
    hidden = sorted(s for s in sections if (rel(path), s) not in shown)
    assert not hidden, f"sections no page includes: {hidden}"


@pytest.mark.parametrize("path", PROGRAMS, ids=rel)
def test_snippet_runs_and_prints_its_output_lines(
    path: Path, eval_example: EvalExample
):
    example = CodeExample.create(path.read_text(), path=path)
    eval_example.set_config(line_length=80)
    if eval_example.update_examples:
        eval_example.run_print_update(example)
    else:
        eval_example.run_print_check(example)


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=rel)
def test_snippets_print_only_in_the_story(path: Path):
    """Recipe code a reader copies never prints: only main() and demo_*() do."""
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if STORY_FUNCTIONS.match(node.name):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and getattr(inner.func, "id", "") == "print":
                offenders.append(f"{node.name}:{inner.lineno}")
    assert not offenders


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=rel)
def test_every_line_of_a_snippet_is_in_a_section(path: Path):
    """What the page shows is the whole program, so its notebook runs."""
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
    body = source.replace(f'"""{docstring}"""', "", 1) if docstring else source
    depth, outside = 0, []
    for number, line in enumerate(body.splitlines(), 1):
        match = MARKER.match(line)
        if match:
            depth += 1 if match.group(1) == "start" else -1
        elif depth == 0 and line.strip() and not line.lstrip().startswith("#"):
            outside.append(f"{number}: {line}")
    assert not outside, "code outside any --8<-- section"


def page_examples() -> list[CodeExample]:
    return [ex for ex in find_examples(str(DOCS)) if ex.path.suffix == ".md"]


@pytest.mark.parametrize("example", page_examples(), ids=str)
def test_code_written_in_a_page_runs(example: CodeExample, eval_example: EvalExample):
    lines = [line for line in example.source.splitlines() if line.strip()]
    if all(INCLUDE.match(line) for line in lines):
        return  # an include: its snippet is run by test_snippet_runs_...
    if example.prefix_settings().get("test") == "skip":
        return  # declared a fragment
    eval_example.set_config(line_length=80)
    if eval_example.update_examples:
        eval_example.run_print_update(example)
    else:
        eval_example.run_print_check(example)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint():
    result = run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = run(sys.executable, "-m", "ruff", "format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=rel)
def test_snippet_is_formatted(path: Path):
    """ruff format would turn `#> out` into `# > out`: compare with that spelling."""
    source = re.sub(r"^(\s*)#> ", r"\1# > ", path.read_text(), flags=re.M)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--no-cache",
            "--line-length",
            "80",
            "--stdin-filename",
            path.name,
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == source, f"run: ruff format {rel(path)} (then restore #>)"


PROOF = re.compile(r"\[`tests/(test_\w+\.py)::(test_\w+)`\]\(source/tests/\1\)")


def test_every_pitfall_shows_naive_and_fix_and_names_existing_tests():
    page = (DOCS / "pitfalls.md").read_text()
    pitfalls = page.split("\n## ")[1:]
    assert len(pitfalls) >= 14
    for pitfall in pitfalls:
        title = pitfall.splitlines()[0]
        assert pitfall.count('=== "Naive"') == 1, title
        assert pitfall.count('=== "Fix"') == 1, title
        proofs = PROOF.findall(pitfall)
        assert len(proofs) >= 2, f"{title}: name the tests of the naive and the fix"
        for file, name in proofs:
            source = (ROOT / "tests" / file).read_text()
            defined = re.search(rf"^(async )?def {name}\(", source, re.MULTILINE)
            assert defined, f"{title}: no test {file}::{name}"
