"""The site and the notebooks: strict builds, notebooks in sync and running."""

from __future__ import annotations

import asyncio
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
from tools.site_hooks import publish_all

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


# Kernels started at once can race for the same ZeroMQ port, and the loser
# dies before running a cell (jupyter/jupyter_client#487): start another.
KERNEL_START_FAILED = "Kernel died before replying to kernel_info"


async def execute(stem: str, workdir: Path) -> nbformat.NotebookNode:
    starts_left = 3
    while True:
        notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        client = NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},  # any directory
        )
        try:
            await client.async_execute()
            return notebook
        except RuntimeError as exc:
            starts_left -= 1
            if str(exc) != KERNEL_START_FAILED or not starts_left:
                raise


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every notebook, run in a fresh kernel each, several at a time.

    Kernel start-up and imports dominate a notebook's run time, and they
    overlap well; a failure is kept and re-raised by that notebook's test.
    """
    stems = nb.section_stems()
    workdirs = {stem: tmp_path_factory.mktemp(stem) for stem in stems}

    async def run_all() -> list[object]:
        limit = asyncio.Semaphore(4)

        async def run_one(stem: str) -> nbformat.NotebookNode:
            async with limit:
                return await execute(stem, workdirs[stem])

        return await asyncio.gather(
            *(run_one(stem) for stem in stems), return_exceptions=True
        )

    results = asyncio.run(run_all())
    return {**dict(zip(stems, results, strict=True)), "workdirs": workdirs}


@pytest.mark.heavy  # 16 kernels: make test-all and CI run them
@pytest.mark.parametrize("stem", nb.section_stems())
def test_notebook_runs_and_prints_the_page_output(stem: str, executed):
    notebook = executed[stem]
    if isinstance(notebook, BaseException):
        raise notebook
    printed = [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
        for line in output.text.splitlines()
    ]
    assert printed == expected_output(stem)
    leftovers = list(executed["workdirs"][stem].iterdir())
    assert not leftovers, "a notebook must keep its files in a temporary directory"


def test_mkdocs_builds_strict(built_site: Path):
    for stem in nb.section_stems():
        assert (built_site / "notebooks" / f"{stem}.ipynb").is_file()
        assert (built_site / stem / "index.html").is_file()


def test_zensical_builds(tmp_path: Path):
    publish_all()  # zensical ignores the mkdocs hook that does this
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


def test_make_docs_reloads_when_a_snippet_changes():
    """mkdocs serve watches docs/ and mkdocs.yml only; pages include snippets/."""
    makefile = (ROOT / "Makefile").read_text()
    serve = next(line for line in makefile.splitlines() if "mkdocs serve" in line)
    assert "--watch snippets" in serve
