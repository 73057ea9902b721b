"""The benchmarks run (quick mode) and write well-formed results.

Timings are never asserted here: they belong to `make bench`. What is asserted
is that every benchmark runs, writes every case it promises, and that the
correct variants really are correct (no lost update).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.__main__ import NAMES

ROOT = Path(__file__).resolve().parent.parent

FIELDS = {"benchmark", "backend", "case", "metric", "value", "runs", "params"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "COOKBOOK_BENCH_RESULTS": str(out)}
    env.pop("COOKBOOK_BENCH_POSTGRES_URL", None)  # SQLite only: seconds, not minutes
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {
        name: json.loads((out / f"{name}-quick.json").read_text()) for name in NAMES
    }


@pytest.mark.parametrize("name", NAMES)
def test_quick_benchmark_writes_well_formed_results(quick_results, name):
    document = quick_results[name]
    assert document["quick"] is True
    assert document["machine"]["versions"]["sqlalchemy"]
    assert document["results"]
    for result in document["results"]:
        assert set(result) >= FIELDS
        assert result["backend"] == "sqlite"
        assert math.isfinite(result["value"])
        assert result["value"] > 0
        assert (
            len(result["runs"]) == document["repeats"] or result["metric"] == "MB peak"
        )


def test_bulk_insert_measures_the_limit_and_every_method(quick_results):
    cases = {r["case"] for r in quick_results["bulk_insert"]["results"]}
    assert {
        "limit: raw sqlite3",
        "fast path (recipe)",
        "Core insert executemany",
        "ORM bulk insert",
        "ORM returning ids, input order",
        "ORM returning (id, key), batched",
        "ORM add_all",
        "commit per row",
    } <= cases


def test_pagination_measures_both_kinds_at_every_depth(quick_results):
    results = quick_results["pagination"]["results"]
    depths = {r["params"]["depth"] for r in results}
    for kind in ("offset", "keyset"):
        assert {
            r["params"]["depth"] for r in results if r["params"]["kind"] == kind
        } == depths


def test_locking_correct_variants_lose_no_update(quick_results):
    for result in quick_results["locking"]["results"]:
        if result["case"].startswith("naive"):
            continue
        writers = result["params"]["writers"]
        assert result["params"]["final"] == [writers] * len(result["runs"])


def test_api_measures_the_limit_every_read_and_the_default_pool(quick_results):
    cases = [r["case"] for r in quick_results["api"]["results"]]
    assert cases == [
        "limit: no-DB route",
        "GET /items/{id}",
        "GET /items?limit=20",
        "GET /items/{id}, pool_size=5",
    ]


def test_read_layers_add_one_layer_per_case_from_the_driver(quick_results):
    results = quick_results["read_layers"]["results"]
    assert results[0]["case"].startswith("driver alone")
    assert results[0]["ratio"] == 1
    assert results[-1]["case"] == "+ BEGIN and COMMIT (the API's session)"
    assert len({r["case"] for r in results}) == len(results) == 5


def test_the_performance_page_is_generated_from_the_committed_results():
    page = ROOT / "docs" / "performance.md"
    assert page.read_text() == report.render(report.load(), draw=False), (
        "stale page: run `python -m benchmarks.report`"
    )
    for plot in ("bulk_insert", "pagination"):
        assert (ROOT / "docs" / "assets" / "performance" / f"{plot}.png").is_file()
    assert set(report.load()) == set(NAMES), "run `make bench`: results missing"


def test_testing_isolation_measures_every_strategy_and_every_test_passes(
    quick_results,
):
    results = quick_results["testing"]["results"]
    assert [r["case"] for r in results] == [
        "limit: no isolation",
        "rollback per test (recipe)",
        "rollback per test, one engine",
        "delete rows per test",
        "fresh database per test",
    ]
    for result in results:
        tests = result["params"]["tests"]
        assert result["params"]["passed"] == [tests] * len(result["runs"])


def test_workers_measures_the_reads_with_one_and_two_workers(quick_results):
    results = quick_results["workers"]["results"]
    assert {r["params"]["workers"] for r in results} == {1, 2}
    assert {r["case"] for r in results} == {
        "GET /items/{id}, 1 worker",
        "GET /items/{id}, 2 workers",
    }
