"""The site and the notebooks: strict builds, notebooks in sync and running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tools import notebooks as nb
from tools.site_hooks import copy_notebooks

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_LINE = re.compile(r"^\s*#> ?(.*)$")
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_matches_its_page(stem: str):
    committed = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
    assert committed == nb.render(stem), "stale notebook: run `make notebooks`"


def expected_output(stem: str) -> list[str]:
    """The #> lines of the page's code, in page order."""
    blocks = nb.split_blocks(nb.expand_page(ROOT / "docs" / f"{stem}.md"))
    return [
        match.group(1)
        for block in blocks
        if block.kind == "code"
        for match in map(OUTPUT_LINE.match, block.lines)
        if match
    ]


@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_runs_and_prints_the_page_output(stem: str, tmp_path: Path):
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # any working directory
    )
    client.execute()
    printed = [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
        for line in output.text.splitlines()
    ]
    assert printed == expected_output(stem)
    assert not list(tmp_path.iterdir()) or all(
        p.suffix != ".db" for p in tmp_path.iterdir()
    ), "a notebook must keep its database in a temporary directory"


def test_mkdocs_builds_strict(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-d",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for stem in nb.section_stems():
        assert (tmp_path / "notebooks" / f"{stem}.ipynb").is_file()
        assert (tmp_path / stem / "index.html").is_file()


def test_zensical_builds(tmp_path: Path):
    copy_notebooks()  # zensical ignores the mkdocs hook that does this
    build = tmp_path / "project"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".venv", ".git", "site"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "zensical"), "build", "--clean"],
        cwd=build,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = build / "site"
    for stem in nb.section_stems():
        assert (site / stem / "index.html").is_file()
        assert (site / "notebooks" / f"{stem}.ipynb").is_file()
