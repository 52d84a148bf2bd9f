"""Round trips and throughput through the Python SDK, optionally against Ray.

    python -m runegrid.bench [--calls 200] [--tasks 10000] [--workers 1] [--slots 2]
                             [--policy none] [--url URL --token T] [--ray] [--json]

Without ``--url`` it starts a local grid (``runegrid serve`` and worker processes, from
``$RUNEGRID_BIN`` or a built ``target/release/runegrid``). Figures:

- blocking call round trip (p50, p90) of a trivial script function (``pub fn add(a, b)
  { a + b }``) and of a no-op WASI module: ``f(1, 2)`` from submission to verified result;
- ``map`` throughput: one job of ``--tasks`` trivial calls, submission to the last result.

With ``--ray`` (when ``ray`` is importable) the same workloads with ``@ray.remote`` functions
on a local Ray (``ray.get(add.remote(1, 2))``, and ``ray.get([...])`` of ``--tasks`` calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ApiError
from .grid import Grid

ADD = "pub fn add(a, b) { a + b }"
NOOP_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _latency(call: Callable[[], Any], n: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return {
        "calls": n,
        "p50_ms": _pct(times, 0.5) * 1e3,
        "p90_ms": _pct(times, 0.9) * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
    }


def _throughput(run: Callable[[], Any], n: int) -> dict[str, float]:
    t = time.perf_counter()
    run()
    el = time.perf_counter() - t
    return {"calls": n, "seconds": el, "calls_per_s": n / el}


def _show_latency(label: str, r: dict[str, float]) -> None:
    p50, p90, n = r["p50_ms"], r["p90_ms"], int(r["calls"])
    print(f"  {label:<34} p50 {p50:7.2f} ms   p90 {p90:7.2f} ms   ({n} calls)")


def _show_throughput(label: str, r: dict[str, float]) -> None:
    print(
        f"  {label:<34} {int(r['calls']):,} calls in {r['seconds']:.2f} s = "
        f"{r['calls_per_s']:,.0f} calls/s"
    )


def bench_grid(grid: Grid, calls: int, tasks: int, options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    noop = grid.wasm(NOOP_WAT, **options)
    r = _latency(lambda: noop(), calls)
    _show_latency("blocking call, WASI no-op", r)
    out["wasm_call"] = r

    add = grid.script(ADD).function("add", **options)
    try:
        if add(1, 2) != 3:
            raise RuntimeError("add(1, 2) did not return 3")
        r = _latency(lambda: add(1, 2), calls)
        _show_latency("blocking call, script add(1, 2)", r)
        out["script_call"] = r
    except ApiError as e:
        if e.code != "unknown_program":
            raise
        print(
            "  blocking call, script add(1, 2)    skipped: this coordinator has no `rune` program"
        )
        add = None  # type: ignore[assignment]

    items: list[list[str]] = [[] for _ in range(tasks)]
    r = _throughput(lambda: noop.map(items, progress=False), tasks)
    _show_throughput("map, WASI no-op", r)
    out["wasm_map"] = r
    if add is not None:
        pairs = [(i, i) for i in range(tasks)]
        results: list[Any] = []
        r = _throughput(lambda: results.extend(add.map(pairs, progress=False)), tasks)
        if results != [2 * i for i in range(tasks)]:
            raise RuntimeError("map of add returned wrong values")
        _show_throughput("map, script add", r)
        out["script_map"] = r
    return out


def bench_ray(calls: int, tasks: int) -> dict[str, Any]:
    import ray

    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:

        @ray.remote
        def add(a: int, b: int) -> int:
            return a + b

        @ray.remote
        def noop() -> None:
            return None

        cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call,unused-ignore]
        print(f"\nray {ray.__version__}, local (num_cpus={int(cpus)})")
        out: dict[str, Any] = {"version": ray.__version__}
        r = _latency(lambda: ray.get(noop.remote()), calls)
        _show_latency("blocking call, no-op", r)
        out["noop_call"] = r
        r = _latency(lambda: ray.get(add.remote(1, 2)), calls)
        _show_latency("blocking call, add(1, 2)", r)
        out["add_call"] = r
        r = _throughput(lambda: ray.get([noop.remote() for _ in range(tasks)]), tasks)
        _show_throughput("pipelined, no-op", r)
        out["noop_map"] = r
        r = _throughput(lambda: ray.get([add.remote(i, i) for i in range(tasks)]), tasks)
        _show_throughput("pipelined, add", r)
        out["add_map"] = r
        return out
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m runegrid.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--calls", type=int, default=200, help="blocking calls per latency figure")
    ap.add_argument("--tasks", type=int, default=10_000, help="calls in the map job")
    ap.add_argument("--workers", type=int, default=1, help="local grid: worker processes")
    ap.add_argument("--slots", type=int, default=2, help="local grid: slots per worker")
    ap.add_argument(
        "--policy",
        default="none",
        choices=["none", "adaptive", "quorum"],
        help="verification policy of the calls (default none: one attempt, like Ray)",
    )
    ap.add_argument("--url", help="use this coordinator instead of starting a local grid")
    ap.add_argument("--token", help="its token (default $RUNEGRID_TOKEN)")
    ap.add_argument("--bin", help="runegrid binary for the local grid")
    ap.add_argument("--ray", action="store_true", help="run the same workloads on Ray too")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    a = ap.parse_args(argv)

    options: dict[str, Any] = {"policy": a.policy, "timeout": 600}
    report: dict[str, Any] = {"policy": a.policy}
    if a.url:
        print(f"runegrid Python SDK against {a.url}, policy {a.policy}")
        with Grid(a.url, a.token) as grid:
            report["runegrid"] = bench_grid(grid, a.calls, a.tasks, options)
    else:
        from .local import LocalGrid, find_binary

        repo = Path(__file__).resolve().parents[4]
        binary = a.bin or find_binary(repo if (repo / "Cargo.toml").is_file() else None)
        with LocalGrid(workers=a.workers, slots=a.slots, binary=binary, log="warn") as local:
            print(
                f"runegrid Python SDK, local grid on loopback: 1 coordinator, {a.workers} worker "
                f"process(es) x {a.slots} slots, policy {a.policy}, {os.cpu_count()} cores"
            )
            with local.grid() as grid:
                report["runegrid"] = bench_grid(grid, a.calls, a.tasks, options)
    if a.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("\nray is not installed (pip install ray): no comparison")
        else:
            report["ray"] = bench_ray(a.calls, a.tasks)
    if a.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
