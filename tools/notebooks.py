"""Generate notebooks/<section>.ipynb from docs/<section>.md and its includes.

The page is expanded with pymdownx.snippets configured exactly as in mkdocs.yml,
so a notebook shows the code the site shows. Top-level ```python fences, and
those inside a collapsed `???` block (the program's imports, the foundation a
page repeats), become code cells; everything else becomes markdown cells: code
in tabs and in `!!!` admonitions is shown, not run. `asyncio.run(x)` becomes
`await x` (notebooks run inside an event loop).

A notebook downloaded alone runs in a fresh Jupyter: before its first code
cell it says how to run it, and a cell installs what the code needs when it is
missing (pyproject.toml's dependencies, the ranges the matrix tests). The
reference API's notebook also unpacks its package from the page's download.

    python -m tools.notebooks           # write every notebook
    python -m tools.notebooks --check   # exit 1 if a committed notebook is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import markdown
import nbformat
import yaml

from tools.versions import notebook_requirements

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
SNIPPETS = ROOT / "snippets"

FENCE_OPEN = re.compile(r"^```(\w*)(?:\s+[^`]*)?$")  # ```python hl_section="x"
ASYNCIO_RUN = re.compile(r"^(\s*)asyncio\.run\((.*)\)\s*$")
MAIN_GUARD = 'if __name__ == "__main__":'
ADMONITION = re.compile(r'^(!!!|\?\?\?\+?) (\w+)(?: "(.*)")?\s*$')
COLLAPSED = re.compile(r"^\?\?\?\+? \w+")
TAB = re.compile(r'^=== "(.*)"\s*$')
DOWNLOAD_LINK = re.compile(r"^\[.*\]\(notebooks/.*\.ipynb\).*$")
RUN_AS_MODULE = re.compile(r"`python -m snippets\.\w+`")
# The modules the install cell looks for: one per requirement, and greenlet,
# which SQLAlchemy's asyncio extra brings.
NEEDED_MODULES = [
    "fastapi",
    "sqlalchemy",
    "greenlet",
    "aiosqlite",
    "pydantic",
    "httpx",
    "alembic",
]
# What a page's code needs beyond the core dependencies: each module, and
# the distribution that brings it (installed as pyproject's extras pin it).
PAGE_NEEDS = {
    "connections": {"asyncpg": "asyncpg"},  # its outage demo: an asyncpg URL
    "testing": {"pytest": "pytest", "pytest_asyncio": "pytest-asyncio"},
}


def section_stems() -> list[str]:
    """Every section: a snippet module or package with a page of its own."""
    stems = {p.stem for p in SNIPPETS.glob("*.py") if not p.stem.startswith("_")}
    stems |= {p.parent.name for p in SNIPPETS.glob("*/__init__.py")}
    return sorted(stems)


def _snippets_config() -> dict[str, object]:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml names Python objects (emoji settings): they are not needed here.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    Loader.add_constructor("!ENV", lambda *_: None)  # site_url: not needed
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    for ext in config["markdown_extensions"]:
        if isinstance(ext, dict) and "pymdownx.snippets" in ext:
            settings = dict(ext["pymdownx.snippets"])
            settings["base_path"] = [
                str(ROOT / p) for p in settings.get("base_path", ["."])
            ]
            return settings
    raise RuntimeError("mkdocs.yml does not configure pymdownx.snippets")


def expand_page(page: Path) -> list[str]:
    """The page's lines with every --8<-- include resolved, as the site has them."""
    md = markdown.Markdown(
        extensions=["pymdownx.snippets"],
        extension_configs={"pymdownx.snippets": _snippets_config()},
    )
    preprocessor = md.preprocessors["snippet"]
    return list(preprocessor.run(page.read_text().splitlines()))


@dataclass
class Block:
    kind: str  # "markdown" or "code"
    lines: list[str]


def split_blocks(lines: list[str]) -> list[Block]:
    """Python fences at the top level or in a `???` block become code blocks.

    Everything else is markdown.
    """
    blocks: list[Block] = []
    text: list[str] = []
    collapsed = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if COLLAPSED.match(line):
            collapsed = True
        elif line.strip() and not line.startswith("    "):
            collapsed = False
        indent = "    " if collapsed and line.startswith("    ") else ""
        match = FENCE_OPEN.match(line.removeprefix(indent))
        if match and match.group(1) in {"python", "py"}:
            end = lines.index(f"{indent}```", i + 1)
            blocks.append(Block("markdown", text))
            code = [row.removeprefix(indent) for row in lines[i + 1 : end]]
            blocks.append(Block("code", code))
            text = []
            i = end + 1
            continue
        text.append(line)
        i += 1
    blocks.append(Block("markdown", text))
    return [b for b in blocks if "".join(b.lines).strip()]


def notebook_code(lines: list[str]) -> str:
    """Code as a notebook runs it: await instead of asyncio.run, no main guard."""
    out: list[str] = []
    in_guard = False
    for line in lines:
        if line == MAIN_GUARD:
            in_guard = True
            continue
        in_guard = in_guard and line.startswith("    ")
        code = line[4:] if in_guard else line
        out.append(ASYNCIO_RUN.sub(r"\1await \2", code))
    return "\n".join(out).strip("\n")


def notebook_markdown(lines: list[str]) -> str:
    """Material-only syntax (admonitions, tabs) rewritten as plain Markdown."""
    out: list[str] = []
    quoting = False
    for line in lines:
        if DOWNLOAD_LINK.match(line):
            continue
        admonition = ADMONITION.match(line)
        tab = TAB.match(line)
        if admonition:
            title = admonition.group(3) or admonition.group(2).capitalize()
            out.append(f"> **{title}**")
            out.append(">")
            quoting = True
        elif tab:
            out.append(f"**{tab.group(1)}**")
            out.append("")
            quoting = False
        elif line.startswith("    "):
            out.append(f"> {line[4:]}" if quoting else line[4:])
        elif not line.strip():
            out.append("")
        else:
            quoting = False
            out.append(line)
    return "\n".join(out).strip("\n")


def is_package(stem: str) -> bool:
    return (SNIPPETS / stem / "__init__.py").is_file()


def how_to_run(stem: str) -> str:
    """The text before the first code cell: how to run this file as a notebook."""
    text = [
        "**Run this notebook** top to bottom (*Run → Run All Cells* in Jupyter).",
        "The next cell installs what the code needs when it is missing, in the",
        "versions the cookbook is tested with; then everything runs against a",
        "SQLite file in a temporary directory, with nothing to start.",
    ]
    if is_package(stem):
        text += [
            "",
            f"The code is a package, `snippets/{stem}/`: download it with the",
            f"page's *Download the package* button (`{stem}.zip`) and put the zip",
            "next to this notebook; the next cell unpacks it there. (In a clone",
            "of the cookbook's repository it is already installed.)",
        ]
    return "\n".join(text)


def install_code(stem: str) -> str:
    """The first code cell: install what is missing, a no-op where it is not."""
    # Double quotes: %pip runs through the shell, and cmd.exe knows no others.
    page = PAGE_NEEDS.get(stem, {})
    requirements = " ".join(f'"{r}"' for r in notebook_requirements(page.values()))
    needs = ", ".join(f'"{name}"' for name in [*NEEDED_MODULES, *page])
    lines = [
        "# Installs the cookbook's tested versions when a library is missing:",
        "# a fresh Jupyter needs them; an environment that has them skips this.",
        "import importlib.util",
        "",
        f"NEEDS = [{needs}]",
        "if not all(importlib.util.find_spec(name) for name in NEEDS):",
        f"    %pip install --quiet {requirements}",
    ]
    if is_package(stem):
        lines += [
            "",
            f"# snippets/{stem}/, from the page's download, unpacked here.",
            'if importlib.util.find_spec("snippets") is None:',
            "    import zipfile",
            "",
            f'    zipfile.ZipFile("{stem}.zip").extractall()',
            "    importlib.invalidate_caches()",
        ]
    return "\n".join(lines)


def build_notebook(stem: str) -> nbformat.NotebookNode:
    blocks = split_blocks(expand_page(DOCS / f"{stem}.md"))
    cells = []
    prefix = stem.replace("_", "-")
    for index, block in enumerate(blocks):
        cell_id = f"{prefix}-{index:02d}"
        if block.kind == "code":
            if not any(cell.cell_type == "code" for cell in cells):
                cells.append(
                    nbformat.v4.new_markdown_cell(how_to_run(stem), id=f"{prefix}-run")
                )
                cells.append(
                    nbformat.v4.new_code_cell(
                        install_code(stem), id=f"{prefix}-install"
                    )
                )
            source = notebook_code(block.lines)
            cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
        else:
            source = RUN_AS_MODULE.sub("this notebook", notebook_markdown(block.lines))
            cells.append(nbformat.v4.new_markdown_cell(source, id=cell_id))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {
            "display_name": "Python 3",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return notebook


def render(stem: str) -> str:
    return nbformat.writes(build_notebook(stem)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if stale")
    args = parser.parse_args()
    NOTEBOOKS.mkdir(exist_ok=True)
    stale = []
    for stem in section_stems():
        path = NOTEBOOKS / f"{stem}.ipynb"
        text = render(stem)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        elif not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale notebooks (run `make notebooks`): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
