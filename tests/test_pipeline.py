"""The one-source pipeline: snippets, pages, notebooks and site stay in step."""

from __future__ import annotations

import ast
import copy
import re
import subprocess
import sys
from collections import defaultdict
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
TESTS_WITHOUT_SECTION = {
    "pipeline",
    "site",
    "site_browser",
    "benchmarks",
    "matrix",
    "links",
}
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


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=rel)
def test_output_lines_are_spelled_only_as_the_tools_write_them(path: Path):
    """`# > out` is ruff's spelling of `#> out`: a copy left by formatting,
    which no tool checks or updates, and which the page would show twice."""
    strays = [
        f"{number}: {line}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith("# > ")
    ]
    assert not strays


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


# --- One foundation: the same name means the same code ----------------------
# The rules of /work/shared/hooks/same_name.py: every snippet module and the
# reference API (routers excluded: a route shares its data-layer function's
# name by design), top-level functions and classes, compared as AST-unparsed
# source without their docstring (comments never reach the AST); demo_*(),
# main() and each page's Base are the page's own by design.
DRIFT_FILES = sorted(
    p
    for p in SNIPPETS.rglob("*.py")
    if (p.name != "__init__.py" or p.parent.name == "inventory")
    and "routers" not in p.relative_to(SNIPPETS).parts
)
NOT_COMPARED = {"main", "Base"}
PAGE_SPECIFIC = {
    # A page's own models: their columns are the page's lesson.
    "Item",  # each page's item: versioned, soft-deleted, indexed...
    "Order",  # transactions' order vs the reference API's
    "OrderLine",  # the same, for its lines
    "Product",  # bulk's and sorting's own tables
    # A page's own API schemas: they follow its model and its lesson.
    "ItemCreate",  # the fields a page's item is created with
    "ItemOut",  # the fields a page's item publishes
    "ItemPatch",  # a resource's PATCH fields (their base, PatchModel, is shared)
    "KeysetPage",  # the page envelope: pagination's lesson vs the API's contract
    "OrderIn",  # the order a page accepts
    "LineIn",  # an order line a page accepts (transactions, relationships)
    "LineOut",  # an order line a page returns
    "OrderOut",  # the order a page returns
    # A page's own data layer: the query or write is the page's lesson.
    "create_item",  # plain, versioned, soft-delete aware...
    "get_item",  # with or without deleted rows, locked or not
    "update_item",  # a PATCH, a compare-and-swap...
    "delete_item",  # hard delete vs soft delete
    "list_items",  # each page's listing
    "restore_item",  # soft delete's recipe vs the API's, with If-Match
    "keyset_page",  # each program's own query around the shared predicate
    # A program's own domain errors: each derives from its program's base.
    "ItemNotFoundError",  # the message each page prints
    "ItemNotFound",  # the reference API's vs soft delete's
    "NameTaken",  # the reference API's vs soft delete's
    "BadCursor",  # the reference API's vs pagination's
    # A page's own app: its routes are its demonstration.
    "create_app",  # each page wires its own routes and handlers
    "upgrade",  # each Alembic revision's own steps
    "downgrade",  # and their undoing
    "create_order_route",  # transactions' and relationships' own POST /orders
    # Story helpers: they shape what their page prints.
    "short",  # how much of an error message a page shows
    "show",  # how a page prints a response
    "count",  # a row count for the page's demos
    "client_for",  # an in-process client, as the page's demos use it
    "explain",  # a query plan, as the page prints it
    "query_plan",  # the same, on the pages that call it so
}


def compared_source(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """The definition as the AST has it, without its docstring."""
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        node = copy.copy(node)
        node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(node)


def shared_definitions() -> dict[str, dict[str, str]]:
    """{name: {file: source}} for every name defined in two or more files."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for path in DRIFT_FILES:
        for node in ast.parse(path.read_text()).body:
            if not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ):
                continue
            if node.name.startswith("demo_") or node.name in NOT_COMPARED:
                continue
            found[node.name][rel(path)] = compared_source(node)
    return {name: files for name, files in found.items() if len(files) > 1}


SHARED = shared_definitions()


def test_the_drift_check_sees_the_foundation():
    """The check compares something: the foundation is defined on many pages."""
    assert {"create_engine", "get_session", "lifespan"} <= set(SHARED)
    assert not PAGE_SPECIFIC & {"create_engine", "get_session", "lifespan"}


@pytest.mark.parametrize("name", sorted(set(SHARED) - PAGE_SPECIFIC))
def test_same_name_means_same_code(name: str):
    """A copy of the foundation (or any shared recipe) is byte-identical code.

    Need something different? Give it another name, and say why on the page.
    """
    versions: dict[str, list[str]] = defaultdict(list)
    for file, source in SHARED[name].items():
        versions[source].append(file)
    groups = " | ".join(", ".join(files) for files in versions.values())
    assert len(versions) == 1, f"{name} differs between: {groups}"
