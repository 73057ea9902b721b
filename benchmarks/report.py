"""Write docs/performance.md and its plots from benchmarks/results/*.json.

python -m benchmarks.report
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.api import VARIANTS as API_VARIANTS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "performance.md"
PLOTS = ROOT / "docs" / "assets" / "performance"
ORDER = [
    "bulk_insert",
    "pagination",
    "filter_sort",
    "locking",
    "api",
    "read_layers",
    "peers",
]
ORDER += ["testing"]
ORDER += ["workers"]
ORDER += ["export"]


def load() -> dict[str, dict[str, Any]]:
    documents = {}
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if path.exists():
            documents[name] = json.loads(path.read_text())
    return documents


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def table(results: list[dict[str, Any]], extra: list[str] | None = None) -> str:
    extra = extra or []
    memory = any(r.get("peak_mb") is not None for r in results)
    head = ["backend", "case", "median", "ratio", *extra]
    head += ["peak MB", "runs"] if memory else ["runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        cells = [
            r["backend"],
            r["case"],
            f"{fmt(r['value'])} {r['metric']}",
            ratio,
            *[str(r["params"].get(key, "")) for key in extra],
            *([fmt(r["peak_mb"])] if memory else []),
            ", ".join(fmt(x) for x in r["runs"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find(results: list[dict[str, Any]], backend: str, case: str) -> dict[str, Any]:
    return next(r for r in results if r["backend"] == backend and r["case"] == case)


def goal(met: bool, text: str) -> str:
    # The theme's icons: an emoji character is an empty box without an emoji font.
    icon = ":material-check-circle:" if met else ":material-close-circle: not met:"
    return f"- {icon} {text}"


def bulk_goals(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for backend in sorted({r["backend"] for r in results}):
        fast = find(results, backend, "fast path (recipe)")["ratio"]
        ids = find(results, backend, "ORM returning (id, key), batched")["ratio"]
        ordered = find(results, backend, "ORM returning ids, input order")["ratio"]
        lines.append(
            goal(
                fast >= 0.8,
                f"{backend}: fast path at {fast:.2f} of the limit (goal 0.8)",
            )
        )
        lines.append(
            goal(
                max(ids, ordered) >= 0.07,
                f"{backend}: ORM insert returning ids at {max(ids, ordered):.3f} "
                f"of the limit (goal 0.07); in input order: {ordered:.3f}",
            )
        )
    return lines


def import_goals(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for backend in sorted({r["backend"] for r in results}):
        fast = find(results, backend, "import, 1 conflict: ON CONFLICT DO NOTHING")
        slow = find(results, backend, "import, 1 conflict: savepoint per row")
        rows, chunks = fast["params"]["rows"], -(-fast["params"]["rows"] // 1000)
        lines.append(
            goal(
                fast["params"]["inserts"] <= chunks,
                f"{backend}: one conflict in {rows:,} rows costs "
                f"{fast['params']['statements']:,} statements, "
                f"{fast['params']['inserts']} INSERT for {chunks} chunk(s) of 1,000 "
                f"(goal: one per chunk); a savepoint per row: "
                f"{slow['params']['statements']:,} statements, "
                f"{slow['value'] / fast['value']:,.0f}x the time",
            )
        )
    return lines


def pagination_goals(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for backend in sorted({r["backend"] for r in results}):
        deepest = max(r["params"]["depth"] for r in results if r["backend"] == backend)
        keyset = find(results, backend, f"keyset depth {deepest:,}")["ratio"]
        offset = find(results, backend, f"offset depth {deepest:,}")["ratio"]
        lines.append(
            goal(
                keyset <= 2,
                f"{backend}: keyset at depth {deepest:,} costs "
                f"{keyset:.2f}x the first page (goal ≤ 2x); OFFSET {offset:.0f}x",
            )
        )
    return lines


def api_goals(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        if r["case"].startswith("limit") or r["case"] in API_VARIANTS:
            continue
        lines.append(
            goal(
                r["ratio"] >= 0.35,
                f"{r['backend']}: {r['case']} at "
                f"{r['ratio']:.2f} of the no-DB route (goal 0.35)",
            )
        )
    return lines


def both_schemes(name: str, alt: str, draw: Callable[[], Any] | None) -> str:
    """An image for the light scheme and one for the dark, as Markdown.

    `draw` makes the matplotlib figure; it runs once per scheme, inside the
    scheme's style. Material shows each image in its own scheme.
    """
    light, dark = f"{name}.png", f"{name}-dark.png"
    if draw is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        PLOTS.mkdir(parents=True, exist_ok=True)
        for file, style in ((light, "default"), (dark, "dark_background")):
            with plt.style.context(style):
                figure = draw()
                figure.savefig(PLOTS / file, dpi=110)
                plt.close(figure)
    return (
        f"![{alt}](assets/performance/{light}#only-light)\n"
        f"![{alt}](assets/performance/{dark}#only-dark)"
    )


ONE_STATEMENT = "GET /items/{id}'s one-statement session: no BEGIN, no ROLLBACK"
SKIPS = {
    "sqlite": "no BEGIN, and none of the driver's rollbacks, which the rows"
    " above it still pay",
    "postgresql": "no BEGIN and no ROLLBACK sent",
}


def read_layer_notes(results: list[dict[str, Any]]) -> list[str]:
    """What the read session's transaction and the pre-ping each add."""
    lines = []
    for backend in sorted({r["backend"] for r in results}, reverse=True):
        rows = [r for r in results if r["backend"] == backend]
        cost = {r["case"]: r["value"] for r in rows}
        filtered, one_statement, transaction, ping = (
            cost["+ soft-delete filter (do_orm_execute)"],
            cost[ONE_STATEMENT],
            cost["+ BEGIN and ROLLBACK (the API's read session)"],
            cost["+ pool_pre_ping=True (a ping at every checkout)"],
        )
        lines.append(
            f"- {backend}: the read session's BEGIN and ROLLBACK add"
            f" {fmt(transaction - filtered)} µs to a read of {fmt(filtered)} µs;"
            f" a ping at every checkout would add {fmt(ping - transaction)} µs"
            f" more. `GET /items/{{id}}` reads in {fmt(one_statement)} µs,"
            f" {fmt(transaction - one_statement)} µs less than a read session"
            f" ({SKIPS[backend]})."
        )
    return lines


def plot_pagination(results: list[dict[str, Any]], draw: bool) -> str:
    alt = "Page cost versus depth"
    return both_schemes(
        "pagination", alt, (lambda: pagination_figure(results)) if draw else None
    )


def pagination_figure(results: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for backend in sorted({r["backend"] for r in results}):
        for kind, style in (("offset", "-o"), ("keyset", "--s")):
            points = sorted(
                (r["params"]["depth"], r["value"])
                for r in results
                if r["backend"] == backend and r["params"]["kind"] == kind
            )
            axes.plot(*zip(*points, strict=True), style, label=f"{backend} {kind}")
    axes.set_xlabel("depth (rows skipped)")
    axes.set_ylabel("ms per page of 50 (median)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def plot_bulk(results: list[dict[str, Any]], draw: bool) -> str:
    alt = "Bulk insert rows/s per method"
    return both_schemes(
        "bulk_insert", alt, (lambda: bulk_figure(results)) if draw else None
    )


def bulk_figure(results: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    rates = [r for r in results if r["metric"] == "rows/s"]
    backends = sorted({r["backend"] for r in rates})
    figure, axes = plt.subplots(
        len(backends), 1, figsize=(7, 2.6 * len(backends)), squeeze=False
    )
    for row, backend in zip(axes, backends, strict=True):
        mine = [r for r in rates if r["backend"] == backend]
        row[0].barh([r["case"] for r in mine], [r["value"] for r in mine])
        row[0].set_xscale("log")
        row[0].invert_yaxis()
        row[0].set_title(backend)
        row[0].set_xlabel("rows/s (median, log scale)")
    figure.tight_layout()
    return figure


def spread(r: dict[str, Any]) -> str:
    return f"{fmt(r['value'])} updates/s (runs {fmt(min(r['runs']))} to {fmt(max(r['runs']))})"


def locking_notes(results: list[dict[str, Any]]) -> list[str]:
    """Why SQLite's figures look as they do, with this run's numbers."""
    sqlite = [r for r in results if r["backend"] == "sqlite"]
    if not any(r["params"].get("engine") == "cookbook" for r in sqlite):
        return []
    writers = sqlite[0]["params"]["writers"]
    naive = find(sqlite, "sqlite", "naive read-modify-write")
    atomic = find(sqlite, "sqlite", "atomic UPDATE")
    pooled = find(sqlite, "sqlite", "atomic UPDATE, cookbook engine, pool of 5")
    single = find(sqlite, "sqlite", "atomic UPDATE, cookbook engine, 1 connection")
    safe = find(sqlite, "sqlite", "read-modify-write, cookbook engine, 1 connection")
    best = max(pooled["value"], single["value"])
    lines = [
        "SQLite lets one transaction write at a time, so its rates measure how",
        "the writers wait for that lock. With a connection per writer (the rows",
        "that name no pool), nearly every writer finds the lock taken and waits",
        "inside SQLite's busy handler, a poll that sleeps 1, 2, 5, 10, ... up to",
        "100 ms between tries and gives the lock to whichever writer retries",
        "when it is free. There the recommended atomic `UPDATE` shows",
        f"{spread(atomic)}, against {spread(naive)} for the naive code, which",
        f"lost {naive['params']['lost'][0]} of its {writers} updates: the sleeps",
        "set both rates, not the SQL.",
        "",
        "Run the way the cookbook runs SQLite writers (its engine, whose write",
        "transactions begin `BEGIN IMMEDIATE`, and fewer connections than",
        "writers), the writers wait for a connection in the pool instead, which",
        "hands it over as soon as it is returned: the same `UPDATE` shows",
        f"{spread(pooled)} with a pool of 5 and {spread(single)} with one",
        f"connection, {best / atomic['value']:.1f} times the rate with a",
        "connection per writer. Even the naive read-modify-write loses nothing",
        f"there ({spread(safe)} with one connection): each write transaction",
        "holds the lock from its first read.",
        "",
        *postgres_note(results),
        "These figures come from a shared machine (2 CPUs, other jobs running",
        "during the benchmark): each case's runs are interleaved with the other",
        "cases' so a busy spell slows every case alike, but single runs still",
        "vary by a factor of two or more, as the spreads above show. Compare the",
        "rows of one run, and the order of magnitude, not the digits.",
    ]
    return lines


def postgres_note(results: list[dict[str, Any]]) -> list[str]:
    if not any(r["backend"] == "postgresql" for r in results):
        return []
    every = find(results, "postgresql", "atomic UPDATE")
    pooled = find(results, "postgresql", "atomic UPDATE, pool of 5")
    return [
        "On PostgreSQL, writers to one row queue on its row lock and are woken",
        f"when it is released: the atomic `UPDATE` shows {spread(every)} with a",
        f"connection per writer and {spread(pooled)} with a pool of 5.",
        "",
    ]


def locking_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | variant | final counter | lost updates | failed | retries | updates/s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["params"]
        lines.append(
            f"| {r['backend']} | {r['case']} | {p['final']} | {p['lost']} | "
            f"{p['failed']} | {p['retries']} | {fmt(r['value'])} |"
        )
    return "\n".join(lines)


def with_failed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each result with params["failed"]: its tests that did not pass, all runs."""
    return [
        {
            **r,
            "params": {
                **r["params"],
                "failed": sum(r["params"]["tests"] - p for p in r["params"]["passed"]),
            },
        }
        for r in results
    ]


PEER_ROUTES = ("GET /items/{id}", "list of 20")
OURS = "reference API (ours)"


def peer_apps(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["params"]["app"] for r in results))


def peer_backends(results: list[dict[str, Any]]) -> list[str]:
    return sorted({r["backend"] for r in results}, key=["sqlite", "postgresql"].index)


def peer_rate(
    results: list[dict[str, Any]], backend: str, app: str, route: str
) -> float:
    return float(find(results, backend, f"{app}: {route}")["value"])


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def peers_guarantees(results: list[dict[str, Any]]) -> str:
    lines = [
        "| app | version | list returns a total | hides soft-deleted rows | ETag on the item | writes: one transaction per request |",
        "|---|---|---|---|---|---|",
    ]
    for app in peer_apps(results):
        p = next(r["params"] for r in results if r["params"]["app"] == app)
        total = "no" if p["total"] is None else f"yes ({p['total']:,} rows)"
        lines.append(
            f"| {app} | {p['version'] or 'this repository'} | {total} | "
            f"{yes(p['hides_deleted'])} | {yes(p['etag'])} | {p['transaction']} |"
        )
    return "\n".join(lines)


def peers_table(results: list[dict[str, Any]]) -> str:
    backends = peer_backends(results)
    head = ["app"]
    for backend in backends:
        head += [f"{backend}: {route}" for route in PEER_ROUTES]
        head.append(f"{backend}: no-DB route")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for app in peer_apps(results):
        cells = [app]
        for backend in backends:
            for route in (*PEER_ROUTES, "no-DB route"):
                cells.append(fmt(peer_rate(results, backend, app, route)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peers_cpu_table(results: list[dict[str, Any]]) -> str:
    backends = peer_backends(results)
    head = ["app"]
    for backend in backends:
        head += [f"{backend}: {route}" for route in (*PEER_ROUTES, "no-DB route")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for app in peer_apps(results):
        cells = [app]
        for backend in backends:
            for route in (*PEER_ROUTES, "no-DB route"):
                cpu = find(results, backend, f"{app}: {route}")["params"][
                    "cpu_us_median"
                ]
                cells.append("" if cpu is None else fmt(cpu))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus(
    results: list[dict[str, Any]], backend: str, route: str, candidates: list[str]
) -> tuple[float, str]:
    """Ours against the best of `candidates`: the req/s ratio and its words.

    The words add the same comparison by server CPU per request (the
    cheapest candidate's over ours: above 1, ours costs less), which other
    work on the machine disturbs less.
    """
    ours = peer_rate(results, backend, OURS, route)
    best = max(candidates, key=lambda a: peer_rate(results, backend, a, route))
    ratio = ours / peer_rate(results, backend, best, route)
    words = f"{ratio:.2f}x ({best})"

    def cpu(app: str) -> float | None:
        params = find(results, backend, f"{app}: {route}")["params"]
        value = params.get("cpu_us_median")
        return None if value is None else float(value)

    mine = cpu(OURS)
    costs = {a: cpu(a) for a in candidates}
    known = {a: c for a, c in costs.items() if c is not None}
    if mine is not None and len(known) == len(costs):
        cheapest = min(known, key=lambda a: known[a])
        words += (
            f"; by server CPU per request {known[cheapest] / mine:.2f}x ({cheapest})"
        )
    return ratio, words


def peers_goals(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    peers = [a for a in peer_apps(results) if a != OURS]

    def total(app: str) -> bool:
        return next(
            r["params"]["total"] is not None
            for r in results
            if r["params"]["app"] == app
        )

    for backend in peer_backends(results):
        ratio, words = versus(results, backend, "GET /items/{id}", peers)
        lines.append(
            goal(
                ratio >= 1,
                f"{backend}: `GET /items/{{id}}` at {words} of the best peer "
                "(goal ≥ 1 in req/s)",
            )
        )
        with_total = [a for a in peers if total(a)]
        ratio, words = versus(results, backend, "list of 20", with_total)
        lines.append(
            goal(
                ratio >= 1,
                f"{backend}: list of 20 with its total at {words} of the best "
                "peer with a total (goal ≥ 1 in req/s)",
            )
        )
        without = [a for a in peers if not total(a)]
        if without:
            _, words = versus(results, backend, "list of 20", without)
            lines.append(
                f"- {backend}: the price of the total: our list at {words} of "
                "the best list without one"
            )
    return lines


def plot_peers(results: list[dict[str, Any]], draw: bool) -> str:
    alt = "Requests per second, per app and route"
    return both_schemes("peers", alt, (lambda: peers_figure(results)) if draw else None)


def peers_figure(results: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    apps = peer_apps(results)
    backends = peer_backends(results)
    figure, axes = plt.subplots(
        1, len(backends), figsize=(4.2 * len(backends), 4.2), squeeze=False
    )
    height = 0.8 / len(apps)
    for axis, backend in zip(axes[0], backends, strict=True):
        for i, app in enumerate(apps):
            rates = [peer_rate(results, backend, app, route) for route in PEER_ROUTES]
            rows = [row + i * height for row in range(len(PEER_ROUTES))]
            axis.barh(rows, rates, height, label=app)
        axis.set_yticks([row + 0.4 - height / 2 for row in range(len(PEER_ROUTES))])
        axis.set_yticklabels(PEER_ROUTES)
        axis.invert_yaxis()
        axis.set_title(backend)
        axis.set_xlabel("requests/s (median)")
        axis.grid(True, axis="x", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize="small")
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    return figure


def measured_between(documents: dict[str, dict[str, Any]]) -> str:
    dates = sorted(
        d["machine"]["date"][:16].replace("T", " ") for d in documents.values()
    )
    if dates[0] == dates[-1]:
        return f"{dates[0]} UTC"
    return f"between {dates[0]} and {dates[-1]} UTC"


def render(documents: dict[str, dict[str, Any]], draw: bool = True) -> str:
    """The page's Markdown; with draw, also (re)draw its plots."""
    any_doc = next(iter(documents.values()))
    m = any_doc["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    out = [
        "# Performance",
        "",
        "<!-- Generated by `make bench` (benchmarks/report.py): do not edit. -->",
        "",
        "Every speed claim in this cookbook comes from this page, and every figure",
        "on it from `make bench` on the machine below. Each figure is the median of",
        f"{any_doc['repeats']} runs, shown beside the practical limit measured in the",
        "same run: absolute numbers vary between machines, the ratios hold.",
        "",
        f"Measured {measured_between(documents)} on {m['platform']}, {m['cpus']} CPUs, Python",
        f"{m['python']}; {versions}.",
        "",
        "Run them yourself: `make bench` (SQLite), with",
        "`COOKBOOK_BENCH_POSTGRES_URL=postgresql+asyncpg://...` for PostgreSQL too.",
        "",
    ]
    if "bulk_insert" in documents:
        results = documents["bulk_insert"]["results"]
        out += [
            "## Bulk insert",
            "",
            "Rows per second for each way to insert rows (see [Bulk operations](bulk.md)),",
            "beside the limit: raw `sqlite3.executemany` in one transaction on SQLite,",
            "asyncpg's `copy_records_to_table` on PostgreSQL. Slow methods run on fewer",
            "rows (the `rows` column); their rate is what matters. On PostgreSQL the",
            "recipe's fast path is the limit's own `COPY`, sent on the session's",
            "connection inside its transaction: the two rows differ by noise only.",
            "",
            *bulk_goals([r for r in results if r["metric"] == "rows/s"]),
            "",
            table([r for r in results if r["metric"] == "rows/s"], ["rows"]),
            "",
            plot_bulk(results, draw),
            "",
            "Memory of the fast path fed from a generator (SQLite: `executemany` on",
            "chunks of 10,000 rows; PostgreSQL: one `COPY` that streams the generator),",
            "as peak Python allocations (tracemalloc): flat as the row count grows.",
            "",
            table([r for r in results if r["metric"] == "MB peak"], ["rows"]),
            "",
        ]
        imports = [r for r in results if r["case"].startswith("import, ")]
        if imports:
            out += [
                "### Import with one conflict",
                "",
                "An import of a feed whose row in the middle repeats a SKU the table",
                "already has, in one transaction (see",
                "[Bulk operations](bulk.md#import-keep-the-good-rows-report-the-bad-ones)):",
                "the recipe's `INSERT ... ON CONFLICT DO NOTHING RETURNING sku`, one statement per",
                "1,000 rows, against the savepoint per row it replaces. Ratios are to",
                "the recipe on a feed without a conflict; `statements` counts every",
                "statement sent (SQLite's `BEGIN` included). The savepoint-per-row case",
                "runs once: it takes minutes.",
                "",
                *import_goals(imports),
                "",
                table(imports, ["rows", "statements"]),
                "",
            ]
    if "pagination" in documents:
        results = documents["pagination"]["results"]
        out += [
            "## Pagination",
            "",
            "One page of 50 rows sorted by `(price, id)`, NULLs first, with the index the",
            "recipe gives that order, at increasing depth over a table of 1,000,000",
            "rows. The keyset page uses the recipe's own NULL-safe predicate (`after()`",
            "in [Pagination](pagination.md)). Ratios are to the first page of the same",
            "kind. Peak MB is the Python memory of fetching one page (tracemalloc):",
            "the skipped rows of an OFFSET page never reach Python.",
            "",
            *pagination_goals(results),
            "",
            plot_pagination(results, draw),
            "",
            table(results),
            "",
        ]
    if "filter_sort" in documents:
        out += [
            "## Filtering and sorting",
            "",
            "`WHERE category = ? AND status = ? ORDER BY price, id LIMIT 50` over",
            "1,000,000 rows (see [Filtering](filtering.md) and [Sorting](sorting.md)).",
            "Ratios are to the same query without a secondary index.",
            "",
            table(documents["filter_sort"]["results"]),
            "",
        ]
    if "locking" in documents:
        out += [
            "## Concurrent updates",
            "",
            "Writers adding 1 to one counter at the same time, each in its own session",
            "(see [Optimistic locking](locking.md)). The counter must end at the number",
            "of writers; lost updates are silent: no writer saw an error. Rows that",
            "name a *cookbook engine* use the engine of the [Sessions](sessions.md)",
            "page; the others SQLAlchemy's default one (the same on PostgreSQL).",
            "",
            locking_table(documents["locking"]["results"]),
            "",
            *locking_notes(documents["locking"]["results"]),
            "",
        ]
    if "api" in documents:
        results = documents["api"]["results"]
        out += [
            "## Reference API throughput",
            "",
            "Requests per second of the [reference API](inventory.md) under uvicorn",
            "(one worker), 20 keep-alive connections from a separate client process,",
            "beside a route of the same app that touches no database.",
            "",
            *api_goals(results),
            "",
            table(results),
            "",
            "The `pool_size=5` row is the same read with SQLAlchemy's default pool (5",
            "connections, and up to 10 more opened and closed around each request):",
            "the reason the reference API sizes its pool to its concurrency",
            "(`INVENTORY_POOL_SIZE`, default 20). It matters on PostgreSQL, where a",
            "new connection costs a TCP handshake and authentication; on SQLite,",
            "opening a file is cheap and the two rows differ by noise.",
            "",
            "The row without `gc.freeze()` is the same app without that line",
            "of its lifespan: Python's garbage collector then walks every object",
            "start-up built (routes, mappers, the migrations' modules) in every",
            "full collection (see [The application](inventory.md#the-application)).",
            "",
        ]
    if "read_layers" in documents:
        out += [
            "## Where a read's time goes",
            "",
            "Why the goal above is missed: one `GET /items/{id}` read, repeated in one",
            "process. Each + row adds one layer to the + row above it (the last",
            "swaps the read session's rollback for a write session's commit). The",
            "unmarked row, after the filter, is `GET /items/{id}` as the API runs it.",
            "Ratios are to the database driver",
            "alone. Each layer has a reason to be there: Core builds and caches the",
            "SQL, the ORM returns an `Item` the data layer can work with, the filter",
            "keeps soft-deleted rows out of every query, and the transaction makes",
            "each request all-or-nothing (a GET's read session rolls back; the last",
            "row is a write session's commit, for comparison). Together they cost",
            "several times the driver's own time, and that, not the database, is",
            "what bounds the requests per second above. A hot read-only route that",
            "must go faster",
            "can drop layers: a Core query with the filter written out, in",
            "autocommit mode, needs a fraction of the time (first two rows).",
            "",
            table(documents["read_layers"]["results"], ["reads"]),
            "",
            *read_layer_notes(documents["read_layers"]["results"]),
            "",
            "Two of those costs are choices:",
            "",
            "- **The read transaction**, which the reference API skips for",
            "  `GET /items/{id}` only. A read that is one statement is atomic",
            "  without one (it sees one snapshot on both databases), so that",
            "  route reads in autocommit mode: `AUTOCOMMIT` on PostgreSQL; on",
            "  SQLite an engine of its own that sends no BEGIN and skips the",
            "  driver's rollbacks, each a trip to aiosqlite's thread with nothing",
            "  to undo (see [One-statement reads](inventory.md#one-statement-reads)).",
            "  Its session refuses a second",
            "  statement, which would read a second snapshot. Every other GET",
            "  keeps the transaction: an order and its lines, a page and its",
            "  count past the end are two statements, and streaming a large",
            "  result on PostgreSQL needs one.",
            "- **The ping at checkout**, which the reference API pays only after a",
            "  pause. `pool_pre_ping=True` tests every connection at checkout, so",
            "  no request fails on a connection a database restart killed; with",
            "  asyncpg the ping is a `BEGIN`, a `;` and a `ROLLBACK`, three round",
            "  trips outside autocommit. The API's `ping_when_idle` (see",
            "  [Connections](connections.md#dead-connections)) pings only a",
            "  connection idle for half a second or more: reads back to back, as",
            "  here and under load, send none.",
        ]
    if "testing" in documents:
        out += [
            "## Test isolation",
            "",
            "Tests per second of one small test (create an item through the API in",
            "process, list the items) under each way to keep tests apart (see",
            "[Testing your app](testing.md)). Ratios are to the same test with no",
            "isolation: one app for every test, nothing undone. The recipe's row is",
            "the page's `client` fixture: an engine and an app per test, the test's",
            "work rolled back. Deleting rows is `TRUNCATE` on PostgreSQL and `DELETE`",
            "on SQLite, after each test; the empty schema is what this cookbook's own",
            "suite does on PostgreSQL. `failed` counts the tests that failed over all the runs:",
            "an isolated test creates the same item every time, and must get a 201.",
            "",
            table(with_failed(documents["testing"]["results"]), ["tests", "failed"]),
            "",
        ]
    if "export" in documents:
        results = documents["export"]["results"]
        out += [
            "## Export: the whole file versus a stream",
            "",
            "The [Outside the request](background.md) page's export of every",
            "item as CSV: `export_csv_naive` loads every row, then builds the",
            "file in memory; `export_lines` streams it from `stream_scalars`",
            "with `yield_per=1000`. Peak MB is the Python heap's peak during one",
            "export (tracemalloc): the whole file grows with the rows, the",
            "stream holds one batch of 1,000 rows at a time. The stream pays",
            "for it in speed (a line at a time through a generator).",
            "",
            *(
                goal(
                    r["peak_mb"] < 10,
                    f"{r['backend']}: the stream of {r['params']['rows']:,} rows"
                    f" peaks at {fmt(r['peak_mb'])} MB (goal: under 10 MB"
                    " at any size)",
                )
                for r in results
                if r["params"]["case"] == "stream"
            ),
            "",
            table(results, ["rows"]),
            "",
        ]
    if "workers" in documents:
        out += [
            "## Workers",
            "",
            "The [reference API](inventory.md)'s reads with one and two uvicorn",
            "workers (`make app WORKERS=n`), the same client as above. Ratios are to",
            "the no-database route with the same number of workers. The benchmark",
            "machine is shared with other jobs and has few cores, so the figures",
            "are noisy: a second worker can only help when a core is free for it.",
            "See [Connections](connections.md#several-workers) for what several",
            "workers require.",
            "",
            table(documents["workers"]["results"], ["workers"]),
            "",
        ]
    if "peers" in documents:
        document = documents["peers"]
        results = document["results"]
        out += [
            "## Beside the libraries you would use instead",
            "",
            "The same two reads, `GET /items/{id}` and a page of 20 items, from the",
            "[reference API](inventory.md) and from three peers, each written the way its",
            "own documentation writes it (`benchmarks/peers/`): FastCRUD's generated",
            "`crud_router`; Advanced Alchemy's repository service with its FastAPI",
            "extension (`get_many_and_count`, which counts with `count(*) OVER ()` in",
            "the page's own query); and FastAPI's SQL tutorial (SQLModel), made async:",
            "a session per request, `session.get`, `select().offset().limit()`, no total.",
            "Each app has its own database with the same table shape (the reference",
            "API's `items`) and the same rows: 1,000 live items and one soft-deleted.",
            "Each runs in its own uvicorn process (one worker, a pool of 20 connections",
            "for all), loaded by 20 keep-alive connections from another process;",
            f"each figure is the median of {document['repeats']} runs of "
            f"{results[0]['params']['seconds']:g} s, the apps taken in turn",
            "(round-robin) within each run. Client and server share the machine's",
            "cores, so the absolute figures belong to this machine: compare apps",
            "within a column, not across pages.",
            "",
            "What each app gives, asked of the running app itself (the soft-deleted",
            "row: a 404 means the filter hides it; a total that counts 1,001 rows",
            "includes it):",
            "",
            peers_guarantees(results),
            "",
            "Advanced Alchemy's extension commits in its dependency's cleanup, once",
            "the status line has gone out (its middleware records that status and",
            "commits on a 2xx), so a commit that fails there cannot change the",
            "response: the trap the [Sessions](sessions.md) page shows. FastCRUD",
            "commits inside each CRUD call (a request that makes two calls commits",
            "twice); the tutorial's routes call `commit()` themselves before returning.",
            "",
            "Requests per second (median); the no-DB route is each app's own limit,",
            "a route on the same server that touches no database:",
            "",
            *peers_goals(results),
            "",
            peers_table(results),
            "",
            plot_peers(results, draw),
            "",
            "The server's own CPU time per request (µs, median; lower is better),",
            "read from `/proc` around each run. Other work on the machine moves it",
            "far less than it moves requests per second, so where the two tables",
            "disagree, trust this one:",
            "",
            peers_cpu_table(results),
            "",
            "Every run:",
            "",
            table(results),
            "",
        ]
    return "\n".join(out)


def main() -> None:
    documents = load()
    if not documents:
        raise SystemExit("no results: run `make bench` first")
    PAGE.write_text(render(documents))
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
