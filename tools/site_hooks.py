"""MkDocs hook: publish the notebooks and the snippet sources with the site.

notebooks/<stem>.ipynb -> docs/notebooks/     (the "Download notebook" buttons)
snippets/<stem>.py     -> docs/source/        (the "Source" buttons)
snippets/<package>/    -> docs/source/<package>.zip
tests/test_<stem>.py   -> docs/source/tests/  (the Pitfalls page's proofs)

Both targets are git-ignored copies. Zensical ignores hooks, so `make site`
runs `python -m tools.site_hooks` before building.

It also highlights lines by name, never by number: a fence written
```python hl_section="scope"``` around `--8<-- "snippets/x.py:outer"` gets the
`hl_lines` of the section `scope` nested inside `outer`. (Zensical ignores the
hook, so its build shows the same code without the highlight.)
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {
    "notebooks": ("notebooks", "*.ipynb"),
    "source": ("snippets", "*.py"),
    "source/tests": ("tests", "test_*.py"),
}


def publish(target_name: str, source_dir: str, pattern: str) -> None:
    target = ROOT / "docs" / target_name
    target.mkdir(parents=True, exist_ok=True)
    sources = {
        p.name: p
        for p in (ROOT / source_dir).glob(pattern)
        if not p.name.startswith("_")
    }
    for stale in target.glob(pattern):
        if stale.name not in sources:
            stale.unlink()
    for name, source in sources.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)


def zip_packages() -> None:
    """Each package under snippets/ as one download, the same bytes each time.

    Unchanged archives are not rewritten: `mkdocs serve` would rebuild forever.
    """
    for package in (ROOT / "snippets").glob("*/__init__.py"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(package.parent.rglob("*")):
                if not path.is_file() or "__pycache__" in path.parts:
                    continue  # the package's code and its files (alembic.ini)
                name = path.relative_to(ROOT).as_posix()
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
        target = ROOT / "docs" / "source" / f"{package.parent.name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != buffer.getvalue():
            target.write_bytes(buffer.getvalue())


def publish_all() -> None:
    for target_name, (source_dir, pattern) in PUBLISHED.items():
        publish(target_name, source_dir, pattern)
    zip_packages()


def on_pre_build(config: Any, **kwargs: Any) -> None:
    publish_all()


HL_FENCE = re.compile(
    r'^(?P<fence>[ \t]*```[^\n]*?)hl_section="(?P<inner>[\w-]+)"(?P<rest>[^\n]*\n)'
    r'(?P<include>[ \t]*--8<-- "(?P<file>[^":]+):(?P<outer>[\w-]+)"[ \t]*\n)',
    re.MULTILINE,
)
MARKER = re.compile(r"^\s*# --8<-- \[(start|end):([\w-]+)\]\s*$")


def section_lines(path: Path, outer: str, inner: str) -> list[int]:
    """Where `inner`'s lines fall in `outer` as included (markers dropped)."""
    shown, found, inside, number = [], False, False, 0
    for line in path.read_text().splitlines():
        marker = MARKER.match(line)
        if marker and marker.group(2) == outer:
            found = marker.group(1) == "start"
            if not found:
                break
        elif marker and found:
            inside = marker.group(2) == inner and marker.group(1) == "start"
        elif found:
            number += 1
            if inside:
                shown.append(number)
    if not shown:
        raise ValueError(f"{path.name}: no section {inner!r} inside {outer!r}")
    return shown


def highlight_sections(markdown: str) -> str:
    def rewrite(match: re.Match[str]) -> str:
        path = ROOT / match["file"]
        lines = section_lines(path, match["outer"], match["inner"])
        spans = f"{lines[0]}-{lines[-1]}"
        return f'{match["fence"]}hl_lines="{spans}"{match["rest"]}{match["include"]}'

    return HL_FENCE.sub(rewrite, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return highlight_sections(markdown)


if __name__ == "__main__":
    publish_all()
