#!/usr/bin/env python3
"""Peer benchmark: DBOS Transact (Python) running the Cordon workflow benchmark's shape.

    python bench.py --database-url postgres://postgres@127.0.0.1:5432/<db> \
        --runs N --concurrency C [--warmup W] [--mode threads|start|async] \
        [--step-runs K] [--pool-size P]

The workload is one workflow of three sequential `@DBOS.step()` steps that do nothing
but return a small value: what is measured is the engine's own overhead (a durable
workflow-status row, one checkpoint row per step, the result), not user work.

Database. `--database-url` names DBOS's *system database* (DBOS 3.x has no
application database: `DBOS(config={"name": ..., "system_database_url": ...})`;
the 2.x `database_url` key is rejected by 3.x). The script cleans up only what it
created:
  * If the named database does not exist, it creates it (connecting to the
    `postgres` maintenance database on the same server) and drops it at the end,
    DBOS tables and all.
  * If it exists, it is left in place and DBOS's tables go in a fresh schema,
    `dbos_bench_<pid>` (config key `dbos_system_schema`), which is dropped at the
    end. Nothing else in that database is touched.

Concurrency (`--mode`, default `threads`):
  * `threads`: C client threads each call the (synchronous) workflow function
    directly, one run at a time. DBOS runs a directly-called workflow in the caller's
    thread, durably (status row, step checkpoints, result), so this is the cheapest
    path: no hand-off to DBOS's executor and no Future. It is the default because it
    gave the best throughput on the 2-core project machine (see the reply/notes that
    accompany this file); the DB driver is synchronous psycopg 3 either way.
  * `start`: C client threads each call `DBOS.start_workflow(wf, i).get_result()`:
    the run is handed to DBOS's executor thread pool; the client waits on the handle.
  * `async`: an `async def` workflow with `async def` steps, C coroutines on one
    asyncio loop awaiting it. DBOS 3.4 does its system-database writes for async
    workflows through `asyncio.to_thread` on its executor (sync psycopg), so this
    adds thread hops rather than removing them.
Every mode keeps exactly C runs in flight until N have completed.

Measurements:
  * `seconds`, `runs_per_s`: wall time for the N measured runs (after W warm-up runs
    at the same concurrency), from the first start to the last result.
  * `run_latency_ms`: per run, from the client's call (or `start_workflow`) to the
    result being back in the client; p50/p99 over the N runs.
  * `step_overhead_ms`: after the throughput phase, K runs (`--step-runs`, default
    min(N, 500)) of the same workflow one at a time (concurrency 1, so no queueing or
    GIL contention), timing each step call inside the workflow body with
    `time.perf_counter_ns()`; the steps' bodies are no-ops, so a step call's duration is
    DBOS's per-step overhead (context set-up, the checkpoint row's INSERT/commit, the
    serialization of the return value). p50/p99 over the 3*K step calls.

Only the JSON result goes to stdout; DBOS's logs and this script's go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as pkg_version
from typing import Callable, List, Optional

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbos import DBOS, DBOSConfig

log = logging.getLogger("dbos-bench")

# --- the workload ---------------------------------------------------------------

# When set, the workflow bodies append each step call's duration (ns) here.
# Only the sequential step-overhead phase sets it, so list appends from C threads
# never contend in the throughput phase.
RECORD_STEPS = False
STEP_NS: List[int] = []


@DBOS.step()
def step_one(i: int) -> int:
    return i + 1


@DBOS.step()
def step_two(i: int) -> int:
    return i + 2


@DBOS.step()
def step_three(i: int) -> int:
    return i + 3


@DBOS.workflow()
def three_steps(i: int) -> int:
    pc = time.perf_counter_ns
    t0 = pc()
    a = step_one(i)
    t1 = pc()
    b = step_two(a)
    t2 = pc()
    c = step_three(b)
    t3 = pc()
    if RECORD_STEPS:
        STEP_NS.extend((t1 - t0, t2 - t1, t3 - t2))
    return c


@DBOS.step()
async def step_one_async(i: int) -> int:
    return i + 1


@DBOS.step()
async def step_two_async(i: int) -> int:
    return i + 2


@DBOS.step()
async def step_three_async(i: int) -> int:
    return i + 3


@DBOS.workflow()
async def three_steps_async(i: int) -> int:
    pc = time.perf_counter_ns
    t0 = pc()
    a = await step_one_async(i)
    t1 = pc()
    b = await step_two_async(a)
    t2 = pc()
    c = await step_three_async(b)
    t3 = pc()
    if RECORD_STEPS:
        STEP_NS.extend((t1 - t0, t2 - t1, t3 - t2))
    return c


# --- drivers ----------------------------------------------------------------------


def _check(i: int, r: int) -> None:
    if r != i + 6:
        raise RuntimeError(f"workflow {i} returned {r}, expected {i + 6}")


def run_threads(mode: str, runs: int, concurrency: int, base: int) -> tuple[float, List[int]]:
    """C client threads, each with one run in flight; returns (seconds, latencies ns)."""
    if mode == "threads":
        call: Callable[[int], int] = three_steps
    else:

        def call(i: int) -> int:
            return DBOS.start_workflow(three_steps, i).get_result()

    lock = threading.Lock()
    next_i = [0]
    lat: List[int] = [0] * runs
    stop = threading.Event()  # set on an error or a signal: clients finish their run and leave

    def client() -> None:
        pc = time.perf_counter_ns
        while not stop.is_set():
            with lock:
                k = next_i[0]
                if k >= runs:
                    return
                next_i[0] = k + 1
            i = base + k
            t = pc()
            r = call(i)
            lat[k] = pc() - t
            _check(i, r)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="client-") as pool:
        start = time.perf_counter()
        futs = [pool.submit(client) for _ in range(concurrency)]
        try:
            for f in futs:
                f.result()
        except BaseException:
            stop.set()
            raise
        seconds = time.perf_counter() - start
    return seconds, lat


def run_async(runs: int, concurrency: int, base: int) -> tuple[float, List[int]]:
    lat: List[int] = [0] * runs

    async def main() -> float:
        next_i = 0

        async def client() -> None:
            nonlocal next_i
            pc = time.perf_counter_ns
            while next_i < runs:
                k = next_i
                next_i += 1
                i = base + k
                t = pc()
                r = await three_steps_async(i)
                lat[k] = pc() - t
                _check(i, r)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - start

    return asyncio.run(main()), lat


def drive(mode: str, runs: int, concurrency: int, base: int) -> tuple[float, List[int]]:
    if mode == "async":
        return run_async(runs, concurrency, base)
    return run_threads(mode, runs, concurrency, base)


def pct(sorted_ns: List[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    k = max(0, min(len(sorted_ns) - 1, math.ceil(p / 100.0 * len(sorted_ns)) - 1))
    return round(sorted_ns[k] / 1e6, 3)


# --- database set-up and clean-up -----------------------------------------------------


def admin_conninfo(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def ensure_database(url: str) -> tuple[str, bool]:
    """Returns (database name, whether this script created it)."""
    dbname = conninfo_to_dict(url).get("dbname")
    if not dbname:
        raise SystemExit("--database-url must name a database")
    with psycopg.connect(admin_conninfo(url), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
        ).fetchone()
        if exists:
            return dbname, False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        log.info("created database %s", dbname)
        return dbname, True


def ensure_fresh_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone():
            raise SystemExit(f"schema {schema} already exists in the target database; refusing to reuse it")


def drop_database(url: str, dbname: str) -> None:
    with psycopg.connect(admin_conninfo(url), autocommit=True) as conn:
        # FORCE (PostgreSQL 13+) ends any connection a DBOS pool may still hold.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    log.info("dropped database %s", dbname)


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    log.info("dropped schema %s", schema)


# --- main -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up runs (default: min(runs, 200))")
    ap.add_argument("--mode", choices=("threads", "start", "async"), default="threads")
    ap.add_argument("--step-runs", type=int, default=None, help="sequential runs for step overhead (default: min(runs, 500))")
    ap.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="DBOS system-database pool size (default: max(20, concurrency + 4), DBOS's default is 20)",
    )
    args = ap.parse_args()
    if args.runs < 1 or args.concurrency < 1:
        raise SystemExit("--runs and --concurrency must be positive")
    warmup = min(args.runs, 200) if args.warmup is None else args.warmup
    step_runs = min(args.runs, 500) if args.step_runs is None else args.step_runs
    # One connection per in-flight run, plus a few for DBOS's background threads
    # (queue poller, notification listener, jobs), so runs never wait on the pool.
    pool_size = args.pool_size or max(20, args.concurrency + 4)

    # SIGTERM unwinds like Ctrl-C, so the database or schema is still dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    url = args.database_url
    dbname, created = ensure_database(url)
    schema: Optional[str] = None
    if not created:
        schema = f"dbos_bench_{os.getpid()}"
        ensure_fresh_schema(url, schema)

    config: DBOSConfig = {
        "name": "cordon-peer-bench",
        "system_database_url": url,
        "sys_db_pool_size": pool_size,
        "log_level": "WARNING",
    }
    if schema is not None:
        config["dbos_system_schema"] = schema

    global RECORD_STEPS
    try:
        DBOS(config=config)
        DBOS.launch()
        log.info(
            "dbos %s: mode=%s runs=%d concurrency=%d warmup=%d step_runs=%d pool=%d db=%s schema=%s",
            pkg_version("dbos"), args.mode, args.runs, args.concurrency, warmup, step_runs,
            pool_size, dbname, schema or "dbos",
        )

        base = 0
        if warmup > 0:
            s, _ = drive(args.mode, warmup, args.concurrency, base)
            base += warmup
            log.info("warm-up: %d runs in %.2f s", warmup, s)

        seconds, lat = drive(args.mode, args.runs, args.concurrency, base)
        base += args.runs
        lat.sort()
        log.info("measured: %d runs in %.2f s = %.0f runs/s", args.runs, seconds, args.runs / seconds)

        STEP_NS.clear()
        RECORD_STEPS = True
        if step_runs > 0:
            s, _ = drive(args.mode, step_runs, 1, base)
            log.info("step phase: %d sequential runs in %.2f s (%.3f ms/run)", step_runs, s, 1000 * s / step_runs)
        RECORD_STEPS = False
        steps = sorted(STEP_NS)
        if steps:
            log.info("step overhead mean %.3f ms over %d step calls", sum(steps) / len(steps) / 1e6, len(steps))

        result = {
            "peer": "dbos",
            "version": pkg_version("dbos"),
            "runs": args.runs,
            "concurrency": args.concurrency,
            "seconds": round(seconds, 3),
            "runs_per_s": round(args.runs / seconds, 1),
            "run_latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99)},
            "step_overhead_ms": {"p50": pct(steps, 50), "p99": pct(steps, 99)},
        }
    finally:
        DBOS.destroy()  # a no-op if DBOS(...) itself failed
        if created:
            drop_database(url, dbname)
        elif schema is not None:
            drop_schema(url, schema)

    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
