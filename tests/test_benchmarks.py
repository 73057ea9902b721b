"""The benchmarks run (quick mode) and write well-formed results.

Timings are never asserted here: they belong to `make bench`. What is asserted
is that every benchmark runs, writes every case it promises, and that the
correct variants really are correct (no lost update).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.__main__ import NAMES
from benchmarks.peers import APPS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.heavy  # every benchmark: make test-all and CI

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


def test_api_measures_the_limit_every_read_and_each_variant(quick_results):
    cases = [r["case"] for r in quick_results["api"]["results"]]
    assert cases == [
        "limit: no-DB route",
        "GET /items/{id}",
        "GET /items?limit=20",
        "GET /items/{id}, pool_size=5",
        "GET /items/{id}, without gc.freeze()",
    ]


def test_read_layers_add_one_layer_per_case_from_the_driver(quick_results):
    results = quick_results["read_layers"]["results"]
    assert results[0]["case"].startswith("driver alone")
    assert results[0]["ratio"] == 1
    cases = [r["case"] for r in results]
    assert cases[-3:] == [
        "+ BEGIN and ROLLBACK (the API's read session)",
        "+ pool_pre_ping=True (a ping at every checkout)",
        "+ BEGIN and COMMIT instead (a write session)",
    ]
    assert cases[4] == report.ONE_STATEMENT  # after the filter: no BEGIN
    assert len(set(cases)) == len(results) == 8


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


def installed_apps() -> list[str]:
    """The peers whose package is here (the bench extra), and ours."""
    return [
        app.name
        for app in APPS
        if app.distribution is None
        or find_spec(app.distribution.replace("-", "_")) is not None
    ]


def test_peers_measure_each_installed_app_on_its_limit_and_both_reads(
    quick_results,
):
    results = quick_results["peers"]["results"]
    expected = [
        f"{app}: {route}"
        for app in installed_apps()
        for route in ("no-DB route", "GET /items/{id}", "list of 20")
    ]
    assert [r["case"] for r in results] == expected
    for result in results:
        params = result["params"]
        assert params["connections"] == 20
        assert params["total"] is None or isinstance(params["total"], int)
        assert isinstance(params["hides_deleted"], bool)
        assert isinstance(params["etag"], bool)
        assert params["transaction"]
        assert len(params["cpu_us"]) == len(result["runs"])


def test_peers_record_what_the_reference_api_guarantees(quick_results):
    """Asked of the running app: a wrong seed or a wrong probe fails here."""
    ours = next(
        r["params"]
        for r in quick_results["peers"]["results"]
        if r["params"]["app"] == "reference API (ours)"
    )
    assert ours["total"] == 1000  # the soft-deleted row is not counted
    assert ours["hides_deleted"] is True
    assert ours["etag"] is True
    assert ours["ordered_by_id"] is True


def test_committed_peers_results_cover_every_app_read_and_database():
    document = json.loads((ROOT / "benchmarks" / "results" / "peers.json").read_text())
    assert document["quick"] is False
    results = document["results"]
    cases = [(r["backend"], r["case"]) for r in results]
    assert len(cases) == len(set(cases))
    assert set(cases) == {
        (backend, f"{app.name}: {route}")
        for backend in ("sqlite", "postgresql")
        for app in APPS
        for route in ("no-DB route", "GET /items/{id}", "list of 20")
    }
    for result in results:
        assert len(result["runs"]) == document["repeats"] >= 3
        assert result["params"]["seconds"] >= 2
        assert result["params"]["cpu_us_median"] > 0
        assert math.isfinite(result["value"])
        assert result["value"] > 0
    for app in APPS:
        if app.distribution:
            assert document["machine"]["versions"][app.distribution]
    assert (ROOT / "docs" / "assets" / "performance" / "peers.png").is_file()


def peer_result(backend, app, route, figures, total):
    value, cpu = figures
    return {
        "backend": backend,
        "case": f"{app}: {route}",
        "value": value,
        "params": {"app": app, "route": route, "total": total, "cpu_us_median": cpu},
    }


def test_peers_goals_compare_with_the_best_peer_and_totals_with_totals():
    rows = [  # app, (req/s, CPU µs) per read, total
        ("reference API (ours)", (500, 2000), (300, 4000), 1000),
        ("fast, with a total", (400, 2500), (350, 3000), 1001),
        ("faster, no total", (600, 1000), (900, 2000), None),
    ]
    results = [
        peer_result("sqlite", app, route, figures, total)
        for app, item, page, total in rows
        for route, figures in (("GET /items/{id}", item), ("list of 20", page))
    ]
    lines = report.peers_goals(results)
    assert lines[0].startswith("- :material-close-circle: not met:")
    assert "0.83x (faster, no total); by server CPU" in lines[0]
    assert "0.50x (faster, no total)" in lines[0]
    assert lines[1].startswith("- :material-close-circle: not met:")
    assert "0.86x (fast, with a total)" in lines[1]
    assert "0.75x (fast, with a total)" in lines[1]
    assert "the price of the total: our list at 0.33x (faster, no total)" in lines[2]


def test_goal_lines_use_the_themes_icons_not_emoji_characters():
    """An emoji character renders as an empty box without an emoji font."""
    page = (ROOT / "docs" / "performance.md").read_text()
    assert "\u2705" not in page
    assert "\u274c" not in page
    assert ":material-check-circle:" in page


def test_every_plot_has_a_twin_for_the_dark_scheme():
    page = (ROOT / "docs" / "performance.md").read_text()
    light = re.findall(r"\]\((assets/performance/[\w-]+)\.png#only-light\)", page)
    dark = re.findall(r"\]\((assets/performance/[\w-]+)-dark\.png#only-dark\)", page)
    assert light
    assert light == dark
    for name in light:
        assert (ROOT / "docs" / f"{name}.png").is_file()
        assert (ROOT / "docs" / f"{name}-dark.png").is_file()


def test_export_measures_the_whole_file_and_the_stream_with_their_memory(
    quick_results,
):
    results = quick_results["export"]["results"]
    cases = {(r["backend"], r["params"]["case"], r["params"]["rows"]) for r in results}
    assert {("sqlite", "whole file", 1_000), ("sqlite", "stream", 2_000)} <= cases
    assert all(r["peak_mb"] is not None and r["peak_mb"] > 0 for r in results)
