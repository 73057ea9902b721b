"""The supported versions: what pyproject promises, what the matrix ran, what
the index page says, and notebooks that run downloaded alone."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement

from tests.test_site import KERNEL_START_FAILED, expected_output
from tools import notebooks as nb
from tools import site_hooks
from tools import versions as v

ROOT = Path(__file__).resolve().parent.parent


def noxfile_constant(name: str) -> object:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == name:
            return ast.literal_eval(node.value)
    raise LookupError(name)


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    """docs/versions.json, written by `make test-matrix`."""
    if os.environ.get("COOKBOOK_MATRIX"):
        pytest.skip("a matrix session: the matrix writes this record after it")
    return dict(json.loads(v.RECORD.read_text()))


def test_lowest_constraints_pin_every_lower_bound_of_pyproject():
    assert v.read_constraints() == v.lower_bounds()


def test_every_direct_dependency_has_a_lower_bound():
    for requirement in v.runtime_requirements():
        operators = {s.operator for s in requirement.specifier}
        assert ">=" in operators, f"{requirement.name}: no lower bound to test"


def test_the_matrix_covers_every_supported_python():
    pythons = noxfile_constant("PYTHONS")
    assert isinstance(pythons, list)
    assert pythons[0] == "3.11"
    assert v.tomllib.loads(v.PYPROJECT.read_text())["project"]["requires-python"] == (
        f">={pythons[0]}"
    )


def test_the_record_ran_the_lowest_versions_on_the_lowest_python(
    record: dict[str, Any],
):
    (lowest,) = [r for r in record["runs"] if r["session"] == "lowest"]
    assert lowest["libraries"] == v.read_constraints()
    pythons = noxfile_constant("PYTHONS")
    assert isinstance(pythons, list)
    assert lowest["python"].startswith(f"{pythons[0]}.")  # LOWEST_PYTHON


def test_the_record_ran_allowed_latest_versions_on_every_python(record: dict[str, Any]):
    latest = [r for r in record["runs"] if r["session"] != "lowest"]
    ran = sorted(".".join(r["python"].split(".")[:2]) for r in latest)
    assert ran == noxfile_constant("PYTHONS")
    allowed = {r.name.lower(): r.specifier for r in v.runtime_requirements()}
    for run in latest:
        assert run["session"] == f"latest-{'.'.join(run['python'].split('.')[:2])}"
        assert run["libraries"].keys() == allowed.keys()
        for name, version in run["libraries"].items():
            assert allowed[name].contains(version), f"{run['session']}: {name}"


def test_every_recorded_run_passed_on_both_databases(record: dict[str, Any]):
    for run in record["runs"]:
        assert run["tests"]["failed"] == 0, run["session"]
        assert run["tests"]["passed"] > 0, run["session"]
        assert run["postgresql"], f"{run['session']}: PostgreSQL half not run"
        assert v.version_tuple(run["sqlite"]) >= v.version_tuple(
            record["minimum_sqlite"]
        )


def test_index_page_shows_the_version_record(record: dict[str, Any]):
    page = v.INDEX.read_text()
    assert v.START in page
    assert page.count(v.START) == page.count(v.END) == 1
    assert v.index_with(record, page) == page, "run `python -m tools.versions write`"


def test_index_table_shows_each_run_in_its_column(record: dict[str, Any]):
    table = v.render(record)
    for run in record["runs"]:
        assert run["python"] in table
        for version in run["libraries"].values():
            assert f"| {version} |" in table or f"| {version} " in table


def test_minimum_sqlite_is_the_newest_feature_the_snippets_use(record: dict[str, Any]):
    sources = "\n".join(p.read_text() for p in (ROOT / "snippets").rglob("*.py"))
    for name, _, pattern in v.SQLITE_FEATURES:
        assert re.search(pattern, sources), f"{name} is no longer used"
    assert record["minimum_sqlite"] == v.minimum_sqlite() == "3.35.0"


def test_the_record_ran_the_suite_in_another_time_zone(record: dict[str, Any]):
    zones = noxfile_constant("OTHER_TIME_ZONE")
    assert isinstance(zones, dict)
    for run in record["runs"]:
        assert run["time_zone"] == zones.get(run["session"], "UTC"), run["session"]


def test_the_record_ran_every_notebook_downloaded_alone(record: dict[str, Any]):
    pythons = noxfile_constant("PYTHONS")
    assert isinstance(pythons, list)
    alone = {r["session"]: r["notebooks_alone"] for r in record["runs"]}
    assert alone.pop(f"latest-{pythons[-1]}") == len(nb.section_stems())
    assert set(alone.values()) == {0}


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_installs_pyprojects_dependencies_first(stem: str):
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "code")
    install = next(line for line in first.source.splitlines() if "%pip" in line)
    quoted = re.findall(r'"([^"]+)"', install)
    page = nb.PAGE_NEEDS.get(stem, {})
    assert quoted == v.notebook_requirements(page.values())
    names = {Requirement(r).name.lower() for r in quoted}
    checked = {*nb.NEEDED_MODULES, *page.values()}
    assert names <= checked, "a requirement the guard never checks"
    assert f"NEEDS = {[*nb.NEEDED_MODULES, *page]}".replace("'", '"') in first.source


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_installs_what_its_code_imports(stem: str):
    """Every module a notebook imports is in the standard library, in the
    project's core dependencies, or installed for that page."""
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    imported = set()
    for cell in notebook.cells[1:]:
        if cell.cell_type != "code" or cell.id.endswith("-install"):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"snippets"}
    brought = {"pydantic_core", "starlette"}  # by a core dependency
    allowed = {*nb.NEEDED_MODULES, *nb.PAGE_NEEDS.get(stem, {}), *brought}
    assert third_party <= allowed


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_says_how_to_run_it_as_a_notebook(stem: str):
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert not nb.RUN_AS_MODULE.search(text), "says to run it as a module"
    assert "**Run this notebook**" in text


def workflow(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text()))


def test_ci_workflow_runs_ci_run_with_every_matrix_python():
    steps = workflow("ci.yml")["jobs"]["test"]["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-"))
    assert setup["uses"].startswith("actions/setup-python@")
    assert sorted(setup["with"]["python-version"].split()) == noxfile_constant(
        "PYTHONS"
    )
    assert setup["with"]["python-version"].split()[-1] == "3.11", "python3: 3.11"
    assert [s["run"] for s in steps if "run" in s][-1] == ".ci/run"


def test_docs_workflow_builds_strict_and_deploys_to_pages_from_main():
    jobs = workflow("docs.yml")["jobs"]
    build = {
        s.get("uses", s.get("run", "")).split("@")[0] for s in jobs["build"]["steps"]
    }
    assert {"make site", "actions/upload-pages-artifact"} <= build
    assert "base_url" in str(jobs["build"]["steps"])  # COOKBOOK_SITE_URL
    assert jobs["deploy"]["steps"][-1]["uses"].startswith("actions/deploy-pages@")
    assert "refs/heads/main" in jobs["deploy"]["if"]


def test_license_is_the_one_pyproject_names():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert v.tomllib.loads(v.PYPROJECT.read_text())["project"]["license"] == "MIT"


RUNNER = f"""
import sys

import nbformat
from nbclient import NotebookClient

for starts_left in (2, 1, 0):  # kernels started at once race for ports
    notebook = nbformat.read(sys.argv[1], as_version=4)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
        break
    except RuntimeError as exc:
        if str(exc) != {KERNEL_START_FAILED!r} or not starts_left:
            raise
nbformat.write(notebook, sys.argv[2])
"""


def isolated_env(venv: Path) -> dict[str, str]:
    """The environment of a reader's shell with only `venv` activated."""
    ours = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != ours]
    env = {
        k: val
        for k, val in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    return {
        **env,
        "PATH": os.pathsep.join([str(venv / "bin"), *path]),
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def run_alone(stem: str, workdir: Path) -> nbformat.NotebookNode:
    """Run the notebook as a reader would: alone, in a fresh environment.

    The environment has Jupyter's kernel and nbclient only; the notebook's
    first cell must install the rest. Returns the executed notebook.
    """
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = isolated_env(venv)
    pip = [python, "-m", "pip", "install", "--quiet", "ipykernel", "nbclient"]
    subprocess.run(pip, env=env, check=True)
    probe = [python, "-c", "import fastapi"]
    missing = subprocess.run(probe, env=env, capture_output=True, check=False)
    assert missing.returncode != 0, "the fresh environment already has FastAPI"

    download = workdir / "download"  # what a reader saved, and nothing else
    download.mkdir()
    shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", download)
    if nb.is_package(stem):
        shutil.copy(ROOT / "docs" / "source" / f"{stem}.zip", download)
    executed = workdir / "executed.ipynb"
    result = subprocess.run(
        [python, "-c", RUNNER, f"{stem}.ipynb", str(executed)],
        cwd=download,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    subprocess.run(probe, env=env, check=True)  # the first cell installed it
    leftovers = {p.name for p in download.iterdir()} - {f"{stem}.ipynb", f"{stem}.zip"}
    assert leftovers <= {"snippets"}, "a notebook keeps its files in a temp dir"
    return nbformat.read(executed, as_version=4)


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Each notebook run alone, three at a time (pip waits a lot)."""
    site_hooks.zip_packages()  # the packages' downloads, as the site has them
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            stem: pool.submit(run_alone, stem, tmp_path_factory.mktemp(stem))
            for stem in nb.section_stems()
        }
    return {stem: f.exception() or f.result() for stem, f in futures.items()}


# A fresh environment costs about 30 s of pip: `make test` leaves these to
# the matrix's newest-Python session (noxfile.FRESH_ENV), which .ci/run runs.
@pytest.mark.fresh_env
@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_runs_downloaded_alone_in_a_fresh_environment(stem: str, alone):
    """Only Jupyter's kernel installed; the notebook installs the rest."""
    notebook = alone[stem]
    if isinstance(notebook, BaseException):
        raise notebook
    printed = [
        line
        for cell in notebook.cells
        if cell.cell_type == "code" and not cell.id.endswith("-install")
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
        for line in output.text.splitlines()
    ]
    assert printed == expected_output(stem)
