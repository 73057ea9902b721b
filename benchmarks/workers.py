"""The reference API's reads with one and with two uvicorn workers.

The same server as benchmarks/api.py (the reference API plus a no-database
route), started as `make app WORKERS=n` starts it: uvicorn's --workers. The
load is the same client, 20 keep-alive connections from another process.
The ratio is to the no-database route with the same number of workers.

    python -m benchmarks.workers [--quick]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from benchmarks.api import free_port, load_in_process, reset_postgres, seed, stop
from benchmarks.common import Config, Result, main

ENDPOINTS = [
    ("limit: no-DB route", "/bench/const/7"),
    ("GET /items/{id}", "/items/7"),
    ("GET /items?limit=20", "/items?limit=20"),
]
WORKERS = (1, 2)
CONNECTIONS = 20


def start_workers(
    database_url: str, port: int, workers: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "WEB_CONCURRENCY": str(workers)}
    command = [
        sys.executable,
        *("-m", "uvicorn", "benchmarks.api_server:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        # The port opens before every worker is ready: warm up, unmeasured.
        load_in_process(port, ENDPOINTS[0][1], CONNECTIONS, 0.5)
        return server
    server.kill()
    raise RuntimeError("the API server did not start")


async def run(config: Config) -> list[Result]:
    backends = ["sqlite"] + (["postgresql"] if config.postgres_url else [])
    endpoints = ENDPOINTS[1:2] if config.quick else ENDPOINTS
    seconds = 0.3 if config.quick else 2.0
    results: list[Result] = []
    for backend in backends:
        if backend == "sqlite":
            for leftover in config.workdir.glob("workers.db*"):
                leftover.unlink()
            url = f"sqlite+aiosqlite:///{config.workdir / 'workers.db'}"
        else:
            assert config.postgres_url
            url = config.postgres_url
            await reset_postgres(url)
        for workers in WORKERS:  # one worker first: it creates the tables
            port = free_port()
            server = start_workers(url, port, workers)
            try:
                if workers == 1:
                    seed(port, 1000)
                limit = 0.0
                for case, path in endpoints:
                    runs = [
                        load_in_process(port, path, CONNECTIONS, seconds)
                        for _ in range(config.repeats)
                    ]
                    value = sorted(runs)[len(runs) // 2]
                    limit = limit or value
                    params = {
                        "workers": workers,
                        "path": path,
                        "connections": CONNECTIONS,
                        "seconds": seconds,
                    }
                    results.append(
                        Result(
                            "workers",
                            backend,
                            f"{case}, {workers} worker{'s' * (workers > 1)}",
                            "req/s",
                            value,
                            runs,
                            params,
                            ratio=value / limit,
                        )
                    )
            finally:
                stop(server)
    return results


if __name__ == "__main__":
    main("workers", run)
