"""MkDocs hook: publish the notebooks and the snippet sources with the site.

notebooks/<stem>.ipynb -> docs/notebooks/     (the "Download notebook" buttons)
snippets/<stem>.py     -> docs/source/        (the "Source" buttons)
snippets/<package>/    -> docs/source/<package>.zip
tests/test_<stem>.py   -> docs/source/tests/  (the Pitfalls page's proofs)

Both targets are git-ignored copies. Zensical ignores hooks, so `make site`
runs `python -m tools.site_hooks` before building.
"""

from __future__ import annotations

import io
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
            for path in sorted(package.parent.rglob("*.py")):
                name = path.relative_to(ROOT).as_posix()
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
        target = ROOT / "docs" / "source" / f"{package.parent.name}.zip"
        if not target.exists() or target.read_bytes() != buffer.getvalue():
            target.write_bytes(buffer.getvalue())


def copy_notebooks() -> None:
    for target_name, (source_dir, pattern) in PUBLISHED.items():
        publish(target_name, source_dir, pattern)
    zip_packages()


def on_pre_build(config: Any, **kwargs: Any) -> None:
    copy_notebooks()


if __name__ == "__main__":
    copy_notebooks()
