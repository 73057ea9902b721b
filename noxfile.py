"""The version matrix: the suite on every supported Python, latest and lowest.

    make test-matrix      # every session, then docs/versions.json and the index
    nox -s lowest         # one session (nox from the `matrix` extra)

`latest-3.11`, `latest-3.12`, `latest-3.13`: the newest versions pip resolves.
`lowest`: the lower bounds of pyproject.toml (constraints/lowest.txt) on the
lowest supported Python. Each runs the suite as `make test` does (snippets,
pages and notebooks included, PostgreSQL too when COOKBOOK_TEST_POSTGRES_URL
is set), minus the checks that do not depend on these versions (see SKIPPED).
A Python that cannot be found is an error, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
LOWEST_PYTHON = PYTHONS[0]
CONSTRAINTS = "constraints/lowest.txt"
# What one session runs beyond `make test`, so the matrix covers it once:
# - the notebooks downloaded alone (tests marked `fresh_env`: a new virtualenv
#   and about 30 s of pip each), on the newest Python: they install the newest
#   versions whatever the session, so only the Python matters;
# - the whole suite in a time zone with a non-whole-hour offset (UTC-03:30,
#   -02:30 in summer), where a naive or local datetime anywhere shows up.
FRESH_ENV = f"latest-{PYTHONS[-1]}"
OTHER_TIME_ZONE = {"latest-3.12": "America/St_Johns"}
# Version-independent checks, left to `make test`: the browser check and the
# two site builds (their tools are not in the constraints), lint and mypy;
# the sessions install the `suite` extra, without those tools.
SKIPPED = [
    "--ignore=tests/test_site_browser.py",
    "--deselect=tests/test_site.py::test_mkdocs_builds_strict",
    "--deselect=tests/test_site.py::test_zensical_builds",
]

nox.options.sessions = ["latest", "lowest"]
nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"  # pip, with its shared cache


def _pyenv_version() -> str | None:
    """PYENV_VERSION naming each matrix Python, so pyenv's shims find them.

    pyenv's `python3.12` shim only runs when 3.12.x is among the selected
    versions; this selects the newest installed patch release of each.
    """
    if not shutil.which("pyenv"):
        return None
    bare = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True
    ).stdout.split()
    chosen = []
    for python in PYTHONS:
        found = [v for v in bare if re.fullmatch(rf"{re.escape(python)}\.\d+", v)]
        if found:
            chosen.append(max(found, key=lambda v: int(v.rsplit(".", 1)[1])))
    return ":".join(chosen) or None


if "PYENV_VERSION" not in os.environ and (selected := _pyenv_version()):
    os.environ["PYENV_VERSION"] = selected


def run_suite(session: nox.Session, *install: str) -> None:
    session.install("-e", ".[suite]", *install)
    env = {
        "COOKBOOK_MATRIX": "1",  # the record this run writes is not checked
        # UTC unless the session is the other zone's: not the machine's own.
        "TZ": OTHER_TIME_ZONE.get(session.name, "UTC"),
    }
    select = [] if session.name == FRESH_ENV else ["-m", "not fresh_env"]
    session.run(
        "pytest",
        "-n",
        "2",
        "--dist",
        "loadfile",
        "-q",
        f"--junitxml=.nox/records/{session.name}.xml",
        *select,
        *SKIPPED,
        *session.posargs,
        env=env,
    )
    session.run(
        "python", "-m", "tools.versions", "probe", session.name, silent=True, env=env
    )


@nox.session(python=PYTHONS)
def latest(session: nox.Session) -> None:
    """The suite on the newest versions pyproject.toml allows."""
    run_suite(session, "--upgrade", "--upgrade-strategy", "eager")


@nox.session(python=LOWEST_PYTHON)
def lowest(session: nox.Session) -> None:
    """The suite on the lowest versions pyproject.toml allows."""
    run_suite(session, "--constraint", CONSTRAINTS)
