"""Scale-out benchmark: one replica vs two behind nginx vs one with two workers, side by side.

Every configuration serves the same bundle with the online state in Redis (what replicas
share) and is measured in the same run with wrk (1 thread, 8 connections): ``/health/live``
and ``GET /recommendations`` for warm visitors (rotating ids). Configurations:

* ``1 replica``: one uvicorn process, addressed directly;
* ``1 replica via nginx``: the same process behind nginx (the balancer's own cost);
* ``2 replicas via nginx``: two processes behind nginx (``infrastructure/nginx``);
* ``1 replica, 2 workers``: ``RECSYS_WORKERS=2`` (uvicorn's workers share the port).

On 2 cores, wrk, nginx and the replicas share the CPU: expect well under 2x.

    .venv/bin/python benchmarks/serve_replicas.py [--bundle var/bench/bundle] [--duration 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_full_scale import (
    WrkResult,
    free_port,
    hardware,
    lua_rotation,
    run_wrk,
    server_env,
    stop,
    wait_ready,
)
from monitoring.servers import start_nginx

from recsys.bundle import Bundle

REDIS_URL = "redis://127.0.0.1:6379/7"


def start_replica(
    bundle: Path, tmp: Path, workers: int, prefix: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    env = server_env(bundle, tmp, port, workers)
    env |= {"RECSYS_ONLINE_STATE_URL": REDIS_URL, "RECSYS_ONLINE_STATE_PREFIX": prefix}
    log = tmp / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastapi_service"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_ready(proc, port, log, 300, streak=2 * workers)
    return proc, port


def measure(name: str, url: str, script: Path, duration: float) -> tuple[WrkResult, WrkResult]:
    live = run_wrk(f"{name}: /health/live", f"{url}/health/live", duration, 8)
    recs = run_wrk(f"{name}: warm recommendations", url, duration, 8, script)
    for result in (live, recs):
        print(
            f"  {result.name:<45} {result.requests_per_s:>9,.0f} req/s  p99 "
            f"{result.p99_ms:6.2f} ms  non-2xx {result.non_2xx}  errors {result.socket_errors}",
            flush=True,
        )
    return live, recs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("var/bench/bundle"))
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    if not (args.bundle / "arrays.npz").is_file():
        parser.error(f"no bundle at {args.bundle}: run benchmarks/train_full_scale.py first")
    print(f"machine: {hardware()}; bundle {args.bundle}; wrk 1 thread, 8 connections, "
          f"{args.duration:.0f} s per measurement", flush=True)  # fmt: skip
    users = Bundle.load(args.bundle).user_ids
    rng = np.random.default_rng(0)
    ids = rng.choice(users, size=min(args.users, len(users)), replace=False)
    prefix = f"bench:{uuid.uuid4().hex}:"
    results: dict[str, tuple[WrkResult, WrkResult]] = {}
    with tempfile.TemporaryDirectory(prefix="replicas-") as tmp_dir:
        tmp = Path(tmp_dir)
        script = lua_rotation(tmp / "rotation.lua", ids, 5)
        procs = []
        balancers = []
        try:
            a, port_a = start_replica(args.bundle, tmp / "a", 1, prefix)
            procs.append(a)
            results["1 replica"] = measure("1 replica", f"http://127.0.0.1:{port_a}", script,
                                           args.duration)  # fmt: skip
            one = start_nginx([f"127.0.0.1:{port_a}"], tmp / "nginx-1", free_port())
            balancers.append(one)
            results["1 replica via nginx"] = measure("1 replica via nginx", one.url, script,
                                                     args.duration)  # fmt: skip
            b, port_b = start_replica(args.bundle, tmp / "b", 1, prefix)
            procs.append(b)
            two = start_nginx(
                [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"], tmp / "nginx-2", free_port()
            )
            balancers.append(two)
            results["2 replicas via nginx"] = measure("2 replicas via nginx", two.url, script,
                                                      args.duration)  # fmt: skip
            for proc in procs:
                stop(proc)
            w, port_w = start_replica(args.bundle, tmp / "w", 2, prefix)
            procs.append(w)
            results["1 replica, 2 workers"] = measure(
                "1 replica, 2 workers", f"http://127.0.0.1:{port_w}", script, args.duration
            )
        finally:
            for balancer in balancers:
                balancer.stop()
            for proc in procs:
                stop(proc)
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)
    base = results["1 replica"][1].requests_per_s
    print("\nconfiguration                 live req/s   warm recs req/s   p99 ms   vs 1 replica")
    for name, (live, recs) in results.items():
        print(f"{name:<28} {live.requests_per_s:>11,.0f} {recs.requests_per_s:>17,.0f} "
              f"{recs.p99_ms:>8.2f} {recs.requests_per_s / base:>13.2f}x")  # fmt: skip
    failed = sum(
        r.non_2xx + sum(r.socket_errors.values()) for pair in results.values() for r in pair
    )
    print(f"failed requests in all runs: {failed}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    raise SystemExit(main())
