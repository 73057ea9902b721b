"""Keep the Recipes part of mkdocs.yml's nav in the cookbook's order.

python -m tools.nav            # rewrite the nav from the pages that exist
"""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = ROOT / "mkdocs.yml"

# (stem, title) in reading order; a page appears once docs/<stem>.md exists.
RECIPES = [
    ("sessions", "Sessions"),
    ("extracted_vs_inline", "Extracted vs inline"),
    ("bulk", "Bulk operations"),
    ("locking", "Optimistic locking"),
    ("soft_delete", "Soft delete"),
    ("transactions", "Transactions"),
    ("pagination", "Pagination"),
    ("filtering", "Filtering"),
    ("sorting", "Sorting"),
]
# Beyond the nine: running the recipes for real.
IN_PRODUCTION = [
    ("testing", "Testing your app"),
    ("migrations", "Migrations"),
    ("connections", "Connections"),
    ("relationships", "Relationships"),
    ("background", "Outside the request"),
    ("idempotency", "Retries and idempotency"),
]
GUIDES = [
    ("inventory", "Reference API"),
    ("pitfalls", "Pitfalls"),
    ("performance", "Performance"),
]
BLOCK = re.compile(r"^nav:\n(?:[ -].*\n)*", re.M)


def render_nav() -> str:
    def entries(items: list[tuple[str, str]]) -> list[str]:
        return [
            f"      - {title}: {stem}.md"
            for stem, title in items
            if (ROOT / "docs" / f"{stem}.md").exists()
        ]

    lines = ["nav:", "  - Home: index.md", "  - Recipes:", *entries(RECIPES)]
    production = entries(IN_PRODUCTION)
    if production:
        lines += ["  - In production:", *production]
    guides = entries(GUIDES)
    if guides:
        lines += ["  - Beyond the recipes:", *guides]
    return "\n".join(lines) + "\n"


def main() -> None:
    with MKDOCS.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read()
        new = BLOCK.sub(render_nav(), text, count=1)
        handle.seek(0)
        handle.write(new)
        handle.truncate()


if __name__ == "__main__":
    main()
