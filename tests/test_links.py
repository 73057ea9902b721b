"""Links to SQLAlchemy's documentation name the version pyproject.toml supports."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCS_LINK = re.compile(r"docs\.sqlalchemy\.org/en/([^/\s)\"'>#]+)")


def supported_docs_version() -> str:
    """The docs' version segment for sqlalchemy's lower bound: 2.1.0 -> "21"."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name.lower() == "sqlalchemy":
            (bound,) = (s.version for s in requirement.specifier if s.operator == ">=")
            major, minor = Version(bound).release[:2]
            return f"{major}{minor}"
    raise LookupError("sqlalchemy is not a dependency in pyproject.toml")


def linked_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "snippets").rglob("*.py")),
    ]


def test_sqlalchemy_docs_links_name_the_supported_version() -> None:
    version = supported_docs_version()
    found: list[tuple[str, str]] = [
        (f"{path.relative_to(ROOT)}:{number}", segment)
        for path in linked_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for segment in DOCS_LINK.findall(line)
    ]
    assert found, "no link to docs.sqlalchemy.org found: is the pattern stale?"
    wrong = [
        f"{where}: /en/{segment}/" for where, segment in found if segment != version
    ]
    assert not wrong, f"link SQLAlchemy's docs at /en/{version}/:\n" + "\n".join(wrong)
