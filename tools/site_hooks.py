"""MkDocs hook: publish notebooks/*.ipynb under docs/notebooks/ for download.

Zensical ignores hooks, so `make site` runs `python -m tools.site_hooks` first.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def copy_notebooks() -> None:
    target = ROOT / "docs" / "notebooks"
    target.mkdir(exist_ok=True)
    sources = {p.name: p for p in (ROOT / "notebooks").glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, source in sources.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    copy_notebooks()


if __name__ == "__main__":
    copy_notebooks()
