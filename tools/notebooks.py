"""Generate notebooks/<section>.ipynb from docs/<section>.md and its includes.

The page is expanded with pymdownx.snippets configured exactly as in mkdocs.yml,
so a notebook shows the code the site shows. Top-level ```python fences, and
those inside a collapsed `???` block (the program's imports, the foundation a
page repeats), become code cells; everything else becomes markdown cells: code
in tabs and in `!!!` admonitions is shown, not run. `asyncio.run(x)` becomes
`await x` (notebooks run inside an event loop).

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


def build_notebook(stem: str) -> nbformat.NotebookNode:
    blocks = split_blocks(expand_page(DOCS / f"{stem}.md"))
    cells = []
    for index, block in enumerate(blocks):
        cell_id = f"{stem.replace('_', '-')}-{index:02d}"
        if block.kind == "code":
            source = notebook_code(block.lines)
            cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
        else:
            source = notebook_markdown(block.lines)
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
