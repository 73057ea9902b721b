"""MkDocs hook: publish the notebooks and the snippet sources with the site.

notebooks/<stem>.ipynb -> docs/notebooks/ (the "Download notebook" buttons)
snippets/<stem>.py     -> docs/source/    (the "Source" buttons)

Both targets are git-ignored copies. Zensical ignores hooks, so `make site`
runs `python -m tools.site_hooks` before building.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {
    "notebooks": ("notebooks", "*.ipynb"),
    "source": ("snippets", "*.py"),
}


def publish(target_name: str, source_dir: str, pattern: str) -> None:
    target = ROOT / "docs" / target_name
    target.mkdir(exist_ok=True)
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


def copy_notebooks() -> None:
    for target_name, (source_dir, pattern) in PUBLISHED.items():
        publish(target_name, source_dir, pattern)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    copy_notebooks()


if __name__ == "__main__":
    copy_notebooks()
