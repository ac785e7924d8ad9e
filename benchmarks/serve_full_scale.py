"""Full-scale serving benchmark: the service as deployed, loaded with wrk, goals side by side.

Starts ``python -m fastapi_service`` (exactly the image command) on 127.0.0.1 with a local
bundle folder, then in one run measures:

* start-up to ready: process start until ``GET /health/ready`` answers 200 (goal <= 30 s);
* wrk (1 thread, N connections, same duration, each after a short warm-up) against
  (a) ``GET /health/live`` (the server's ceiling), (b) ``GET /recommendations?user_id=..&k=5``
  rotating over sampled warm visitor ids (a wrk Lua script) and (c) the same for unknown
  (cold) visitors, for information; (d) ``POST /events``, one view per request, each from a
  new visitor (ingestion: every 202 means committed, see the README's durability contract);
  (e) ``GET /recommendations`` for browsing visitors asking again: 2,000 other warm visitors
  who each posted a view just before, asked in rotation (not from the precomputed table: the
  first ask after the view ranks them live, later asks get that answer, kept until their next
  event; the first ask after *every* view is what (f) measures);
* throughput of (b) / throughput of (a) (goal >= 0.90) and the p99 latency of (b)
  (goal <= 10 ms), as wrk reports them (``--latency``);
* service memory: VmRSS of the server process and its children after the load runs
  (goal <= 1.5 GB);
* ingestion: (d) / (a) (goal >= 0.5) and p99 <= 10 ms; browsing: (e) / (a) (goal >= 0.7) and
  p99 <= 5 ms (``--db-url`` runs them against PostgreSQL instead of a SQLite file);
* a realistic mix, (f): the last ``--replay-views`` views of the data (``--data``), in the
  data's order, each as a pipelined pair on one connection: ``POST /events`` with the view,
  then ``GET /recommendations`` for that visitor (the answer must reflect the view); each
  view is posted once (every run goes on where the one before stopped), as a shop gets it; the
  throughput counts both requests (goal >= 0.5 of (a)), the p99 is a pair's, and the service's
  ``recsys_recommendations_total`` says which path answered (the policy's name: a known
  visitor ranked live; ``fold_in``: an unknown one from their views; ``popular``: fallback);
* top-k agreement, in process on the same bundle: ``Recommender.top_k`` (the served fast
  path) vs ``Recommender.exact_top_k`` (brute force) for sampled warm users (goal >= 99 %).

With ``--experiment`` the service runs a two-variant A/B experiment (the champion vs the
``popular`` policy over the same bundle, 50/50): every request is routed by visitor hash and
its exposure carries the variant. The goal of the warm ratio is then >= 0.80 (the issue's), and
the run also reports RSS per loaded model, measured in process on the same bundle: the bundle
with its index and champion Recommender, then each extra variant (a popular variant shares the
bundle and the index, so it costs only its catalogue-length arrays).

The whole sequence runs ``--rounds`` times (default 3) on the same server: every ratio is a
run's throughput over the same round's (a), and each goal is judged on the median over the
rounds, printed with its range (a shared 2-core machine varies by 10-20 % between runs).

wrk runs a closed loop: at saturation each connection waits for the requests queued before
its own, so latency ~ connections / throughput; a p99 of 10 ms at 8 connections needs well
under 1.25 ms of server time per request, without pauses (GC, background writes).

Needs wrk (Debian package ``wrk``: ``apt-get install -y wrk``; a Python load generator
saturates before the server on 2 cores). The bundle is written by
``benchmarks/train_full_scale.py``. Do not run it while something else loads the machine.

    .venv/bin/python benchmarks/serve_full_scale.py [--bundle var/bench/bundle] [--duration 20]
        [--connections 8] [--workers 1] [--users 10000] [--rounds 3] [--experiment]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

GOAL_STARTUP_S = 30.0
GOAL_RATIO = 0.90  # the browsing issue: "warm precomputed >= 0.9" keeps holding
GOAL_RATIO_EXPERIMENT = 0.80
GOAL_P99_MS = 10.0
GOAL_AGREEMENT = 0.99
GOAL_RSS_BYTES = 1.5 * 1024**3
GOAL_INGEST_RATIO = 0.5
GOAL_INGEST_P99_MS = 10.0
GOAL_BROWSING_RATIO = 0.7
GOAL_BROWSING_P99_MS = 5.0
GOAL_REPLAY_RATIO = 0.5
BROWSING_VISITORS = 2_000

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


# ---------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What one wrk run reported."""

    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    raw: str


def _ms(text: str) -> float:
    """wrk duration text (``812.00us``, ``3.21ms``, ``1.02s``, ``2.00m``) in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(name: str, out: str) -> WrkResult:
    """Parse the output of ``wrk --latency``."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output of {name} has no match for {pattern!r}:\n{out}")
        return match

    rps = float(find(r"^Requests/sec:\s+([0-9.]+)").group(1))
    p50 = _ms(find(r"^\s+50%\s+(\S+)").group(1))
    p99 = _ms(find(r"^\s+99%\s+(\S+)").group(1))
    max_ms = _ms(find(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)").group(1))
    requests = int(find(r"^\s+(\d+) requests in").group(1))
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    return WrkResult(
        name, rps, p50, p99, max_ms, requests, int(non.group(1)) if non else 0, socket_errors, out
    )


def lua_rotation(path: Path, ids: np.ndarray, k: int) -> Path:
    """A wrk script requesting ``/recommendations?user_id=<id>&k=<k>``, ids round-robin."""
    table = ",".join(str(int(i)) for i in ids)
    path.write_text(
        f"local ids = {{{table}}}\n"
        "local n = #ids\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % n + 1\n"
        f'  return wrk.format("GET", "/recommendations?user_id=" .. ids[i] .. "&k={k}")\n'
        "end\n"
    )
    return path


LUA_EVENTS = """local items = {ITEMS}
local n = #items
local i = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i + 1
  local body = string.format('{"visitorid":%d,"event":"view","itemid":%d}', FIRST + i, items[i % n + 1])
  return wrk.format("POST", "/events", headers, body)
end
"""


def lua_events(path: Path, first_visitor: int, items: np.ndarray) -> Path:
    """A wrk script posting one view per request, each from a new visitor, items round-robin."""
    table = ",".join(str(int(i)) for i in items)
    path.write_text(
        LUA_EVENTS.replace("{ITEMS}", f"{{{table}}}").replace("FIRST", str(first_visitor))
    )
    return path


LUA_REPLAY = """local visitors = {VISITORS}
local items = {ITEMS}
local n = #visitors
local i = 0
local headers = {["Content-Type"] = "application/json"}
init = function(args)
  i = tonumber(args[1]) or 0
end
request = function()
  i = i % n + 1
  local body = string.format('{"visitorid":%d,"event":"view","itemid":%d}', visitors[i], items[i])
  return wrk.format("POST", "/events", headers, body)
    .. wrk.format("GET", "/recommendations?user_id=" .. visitors[i] .. "&k=K")
end
"""


def lua_replay(path: Path, visitors: np.ndarray, items: np.ndarray, k: int) -> Path:
    """A wrk script replaying views in order, each a pipelined pair on one connection: the
    view posted, then the visitor's recommendations (answered after the post, in order);
    its argument is the number of views already replayed (each run goes on from there)."""
    table = ",".join
    path.write_text(
        LUA_REPLAY.replace("{VISITORS}", "{" + table(str(int(v)) for v in visitors) + "}")
        .replace("{ITEMS}", "{" + table(str(int(i)) for i in items) + "}")
        .replace("k=K", f"k={k}")
    )
    return path


def replay_views(data: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(visitors, items) of the last ``n`` views of ``data/events.csv``, oldest first."""
    import pandas as pd

    events = pd.read_csv(data / "events.csv", usecols=["timestamp", "visitorid", "event", "itemid"])
    views = events[events["event"] == "view"].sort_values("timestamp", kind="stable").tail(n)
    return views["visitorid"].to_numpy(np.int64), views["itemid"].to_numpy(np.int64)


def run_wrk(
    name: str,
    url: str,
    duration: float,
    connections: int,
    script: Path | None = None,
    script_args: Sequence[str] = (),
) -> WrkResult:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    cmd += ["--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    done = subprocess.run(
        [*cmd, url, *(["--", *script_args] if script_args else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    return parse_wrk(name, done.stdout)


# ---------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


EXPERIMENT = """experiments:
  - name: bench
    variants:
      - {name: champion, weight: 50}
      - {name: popular, weight: 50, policy: popular}
"""


def server_env(
    bundle: Path,
    tmp: Path,
    port: int,
    workers: int,
    experiments: Path | None = None,
    db_url: str | None = None,
) -> dict[str, str]:
    """The image's environment (Dockerfile), pointed at a local bundle and a temp folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    if experiments is not None:
        env["RECSYS_EXPERIMENTS_FILE"] = str(experiments)
    env.update(
        PYTHONUNBUFFERED="1",
        OPENBLAS_NUM_THREADS="1",
        RECSYS_HOST="127.0.0.1",
        RECSYS_PORT=str(port),
        RECSYS_WORKERS=str(workers),
        RECSYS_MODEL_URI=str(bundle),
        RECSYS_CACHE_DIR=str(tmp / "model-cache"),
        RECSYS_DB_URL=db_url or f"sqlite:///{tmp / 'events.db'}",
        RECSYS_POLL_INTERVAL_S="0",
        RECSYS_ACCESS_LOG="false",
    )
    return env


def post_views(port: int, visitors: np.ndarray, items: np.ndarray) -> None:
    """Each visitor views one item now (batches of 500): they become browsing visitors."""
    for start in range(0, len(visitors), 500):
        body = json.dumps(
            [
                {"visitorid": int(v), "event": "view", "itemid": int(i)}
                for v, i in zip(
                    visitors[start : start + 500], items[start : start + 500], strict=True
                )
            ]
        ).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/events", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 202:
                raise RuntimeError(f"POST /events: {response.status} {response.read()[:300]!r}")
        finally:
            conn.close()


def wait_ready(
    proc: subprocess.Popen, port: int, log: Path, limit_s: float, streak: int = 1
) -> tuple[float, float]:
    """Seconds from start to the first answer of /health/live and to 200 from /health/ready.

    With several workers each loads its own model and a request reaches any of them:
    ready means ``streak`` consecutive 200s on fresh connections (the time of the first).
    """
    start = time.perf_counter()
    live_s = None
    first_ok: float | None = None
    in_a_row = 0
    while time.perf_counter() - start < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before ready:\n{log.read_text()[-4000:]}"
            )
        try:
            if live_s is None and http_get(port, "/health/live")[0] == 200:
                live_s = time.perf_counter() - start
            status, _ = http_get(port, "/health/ready")
            if status == 200:
                if first_ok is None:
                    first_ok = time.perf_counter() - start
                in_a_row += 1
                if in_a_row >= streak:
                    return (live_s if live_s is not None else first_ok), first_ok
                continue
            first_ok, in_a_row = None, 0
        except OSError:
            first_ok, in_a_row = None, 0
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {limit_s:.0f} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/<pid>/stat parent ids)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent_of.items() if p in frontier]
        found += frontier
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def memory(pids: list[int]) -> dict[str, int]:
    """Summed VmRSS, VmHWM (peak RSS) and PSS in bytes over ``pids``."""
    total = {"rss": 0, "hwm": 0, "pss": 0}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for key, field in (("rss", "VmRSS"), ("hwm", "VmHWM")):
            match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
            total[key] += int(match.group(1)) * 1024 if match else 0
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        total["pss"] += int(match.group(1)) * 1024 if match else 0
    return total


def scrape(port: int) -> str:
    """The service's ``/metrics`` text ("" if it does not answer 200)."""
    status, body = http_get(port, "/metrics", timeout=10)
    return body.decode() if status == 200 else ""


def metric_totals(text: str, metric: str, label: str) -> dict[str, float]:
    """Sum of ``metric``'s samples in the exposition ``text``, by the value of ``label``."""
    out: dict[str, float] = {}
    for labels, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        key = re.search(rf'{label}="([^"]*)"', labels)
        if key:
            out[key.group(1)] = out.get(key.group(1), 0.0) + float(value)
    return out


def server_seconds(text: str) -> dict[str, tuple[float, float]]:
    """(count, sum of seconds) of the service's own request-duration histogram, by route."""
    counts = metric_totals(text, "recsys_http_request_duration_seconds_count", "route")
    sums = metric_totals(text, "recsys_http_request_duration_seconds_sum", "route")
    return {route: (count, sums.get(route, 0.0)) for route, count in counts.items()}


# ---------------------------------------------------------------------------- environment


def hardware() -> str:
    model = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024**2:.1f} GiB RAM"
    except (OSError, AttributeError):
        pass
    usable = len(os.sched_getaffinity(0))
    return f"{model}, {os.cpu_count()} cores ({usable} usable){mem}"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


# ---------------------------------------------------------------------------- model memory


def own_rss() -> int:
    """VmRSS of this process in bytes."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def model_memory(bundle_dir: Path) -> dict[str, int]:
    """RSS added by each loaded part, in this process, as the service loads them with an
    experiment: the bundle, its index and champion Recommender, then a popular variant."""
    import gc

    from recsys.bundle import Bundle
    from recsys.serving import Recommender

    gc.collect()
    before = own_rss()
    bundle = Bundle.load(bundle_dir)
    loaded = own_rss()
    champion = Recommender(bundle, policy=bundle.metadata.get("policy") or "blend")
    champion.warm_up()
    with_index = own_rss()
    popular = Recommender(bundle, policy="popular", search=champion.search)
    popular.warm_up()
    with_popular = own_rss()
    del popular, champion, bundle
    return {
        "bundle": loaded - before,
        "index_and_champion": with_index - loaded,
        "popular_variant": with_popular - with_index,
    }


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


# ---------------------------------------------------------------------------- agreement


def agreement(bundle_dir: Path, users: np.ndarray, k: int) -> dict[str, float]:
    """Fast path vs brute force on ``users`` (bundle positions), in this process."""
    from recsys.bundle import Bundle
    from recsys.serving import Recommender

    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_dir)
    load_s = time.perf_counter() - t0
    rec = Recommender(bundle, policy="model")
    t0 = time.perf_counter()
    rec.warm_up()
    index_s = time.perf_counter() - t0
    same = total = lists = overlap = 0
    fast_t, exact_t = [], []
    for u in users:
        w = bundle.user_vectors[u]
        bought = bundle.bought(int(u))
        t0 = time.perf_counter()
        fast = rec.top_k(w, k, exclude=bought)
        t1 = time.perf_counter()
        exact = rec.exact_top_k(w, k, exclude=bought)
        t2 = time.perf_counter()
        fast_t.append(t1 - t0)
        exact_t.append(t2 - t1)
        n = max(len(fast), len(exact))
        total += n
        same += sum(1 for i in range(min(len(fast), len(exact))) if int(fast[i]) == int(exact[i]))
        overlap += len(set(fast.tolist()) & set(exact.tolist()))
        lists += int(np.array_equal(fast, exact))
    fast_ms, exact_ms = np.array(fast_t) * 1e3, np.array(exact_t) * 1e3
    return {
        "positions": same / max(1, total),
        "sets": overlap / max(1, total),
        "lists": lists / max(1, len(users)),
        "load_s": load_s,
        "index_s": index_s,
        "fast_mean_ms": float(fast_ms.mean()),
        "fast_p99_ms": float(np.percentile(fast_ms, 99)),
        "exact_mean_ms": float(exact_ms.mean()),
        "exact_p99_ms": float(np.percentile(exact_ms, 99)),
        "n_items": bundle.n_items,
        "n_users": bundle.n_users,
        "dim": bundle.item_vectors.shape[1],
    }


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "var/bench/bundle")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of each warm-up run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--users", type=int, default=10_000, help="warm ids the wrk script rotates")
    parser.add_argument("--agreement-users", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--data", type=Path, default=REPO / "var/bench/raw", help="events.csv of the replay"
    )
    parser.add_argument(
        "--replay-views", type=int, default=60_000, help="views to replay (each posted once)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every wrk run; goals use each round's ratio to that round's "
        "health/live, median (min-max) over the rounds",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--check", action="store_true", help="exit 1 if any goal fails")
    parser.add_argument(
        "--db-url", default=None, help="event store of the service (default: a new SQLite file)"
    )
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="serve a two-variant A/B experiment (champion vs popular, 50/50)",
    )
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    bundle_dir = args.bundle.resolve()
    arrays = bundle_dir / "arrays.npz"
    if not arrays.is_file():
        sys.exit(f"no bundle at {bundle_dir} (run benchmarks/train_full_scale.py first)")

    print("=== serve_full_scale ===")
    print(f"hardware: {hardware()}")
    print(f"tools: {wrk_version()}; python {platform.python_version()}, numpy {np.__version__}")
    print(
        f"setup: python -m fastapi_service, {args.workers} uvicorn worker(s), 127.0.0.1, "
        f"OPENBLAS_NUM_THREADS=1, access log off; wrk 1 thread, {args.connections} "
        f"connections, {args.duration:.0f} s per run after a {args.warmup:.0f} s warm-up"
    )
    size = sum(f.stat().st_size for f in bundle_dir.iterdir() if f.is_file())
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    print(
        f"bundle: {bundle_dir} ({size / 1e6:.0f} MB on disk; model_version "
        f"{meta.get('model_version')}, policy {meta.get('policy')})"
    )

    # only the id array: the server gets the machine to itself while it starts
    with np.load(arrays, allow_pickle=False) as npz:
        user_ids = npz["user_ids"]
        item_ids = npz["item_ids"]
    rng = np.random.default_rng(args.seed)
    replay_visitors, replay_items = replay_views(args.data, args.replay_views)
    # warm and browsing visitors apart from each other and from the replayed ones: a visitor
    # who posted events is ranked live in every later round
    free = np.flatnonzero(~np.isin(user_ids, replay_visitors))
    n_sample = min(args.users, len(free) - BROWSING_VISITORS)
    sample = rng.choice(free, size=n_sample + BROWSING_VISITORS, replace=False)
    warm_pos = np.sort(sample[:n_sample])
    warm_ids = user_ids[rng.permutation(warm_pos)]
    top = int(user_ids.max()) if len(user_ids) else 0
    cold_ids = np.arange(top + 1, top + 1 + n_sample, dtype=np.int64)
    browsing_ids = user_ids[sample[n_sample:]]
    browsing_items = rng.choice(item_ids, size=len(browsing_ids))
    event_items = rng.choice(item_ids, size=1000)
    del user_ids, item_ids

    failures: list[str] = []
    results: dict[str, list[WrkResult]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_full_scale-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        log = tmp / "server.log"
        warm_lua = lua_rotation(tmp / "warm.lua", warm_ids, args.k)
        cold_lua = lua_rotation(tmp / "cold.lua", cold_ids, args.k)
        events_lua = lua_events(tmp / "events.lua", top + 1 + 2 * n_sample, event_items)
        browsing_lua = lua_rotation(tmp / "browsing.lua", browsing_ids, args.k)
        replay_lua = lua_replay(tmp / "replay.lua", replay_visitors, replay_items, args.k)
        experiments = None
        if args.experiment:
            experiments = tmp / "experiments.yaml"
            experiments.write_text(EXPERIMENT)
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastapi_service"],
                cwd=REPO,
                env=server_env(bundle_dir, tmp, port, args.workers, experiments, args.db_url),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the workers too
            )
        try:
            streak = 1 if args.workers == 1 else 20 * args.workers
            live_s, ready_s = wait_ready(proc, port, log, args.ready_timeout, streak)
            mem_ready = memory(descendants(proc.pid))
            model = json.loads(http_get(port, "/model", timeout=10)[1])
            print(
                f"served: version {model['version']}, policy {model['policy']}, "
                f"{model['n_items']:,} items, {model['n_users']:,} warm users; "
                f"port {port}, server pid {proc.pid}"
            )
            print(
                f"\nstart-up: port answers after {live_s:.2f} s, ready after {ready_s:.2f} s "
                f"(RSS when ready {gib(mem_ready['rss'])})"
            )
            if args.experiment:
                answers = [
                    json.loads(http_get(port, f"/recommendations?user_id={u}&k={args.k}")[1])
                    for u in warm_ids[:1000]
                ]
                split = {
                    v: sum(a["variant"] == v for a in answers) for v in ("champion", "popular")
                }
                print(
                    f"experiment 'bench': champion vs popular 50/50; variants of "
                    f"{len(answers):,} warm visitors: {split}; sources "
                    f"{sorted({(a['variant'], a['source']) for a in answers})}"
                )

            base = f"http://127.0.0.1:{port}"
            plan = [
                ("health/live", f"{base}/health/live", None),
                ("recommendations warm", f"{base}/recommendations", warm_lua),
                ("recommendations cold", f"{base}/recommendations", cold_lua),
                ("events single", f"{base}/events", events_lua),
                ("recommendations browsing", f"{base}/recommendations", browsing_lua),
                ("replay views + asks", f"{base}/", replay_lua),
            ]
            paths: dict[str, float] = {}
            replayed = 0  # views posted by the replay so far: each is posted once
            for name, url, script in [p for r in range(args.rounds) for p in plan]:
                script_args = [str(replayed)] if name.startswith("replay") else []
                if name == "health/live":
                    print(f"-- round {len(results.get(name, [])) + 1} of {args.rounds}")
                if name == "recommendations browsing":
                    post_views(port, browsing_ids, browsing_items)
                if args.warmup > 0:
                    warm = run_wrk(name, url, args.warmup, args.connections, script, script_args)
                    if script_args:  # a pair per view; those in flight at the end were posted
                        replayed += warm.requests // 2 + args.connections
                        script_args = [str(replayed)]
                pids = descendants(proc.pid)
                scraped, cpu0 = scrape(port), cpu_seconds(pids)
                res = run_wrk(name, url, args.duration, args.connections, script, script_args)
                if script_args:
                    replayed += res.requests // 2 + args.connections
                results.setdefault(name, []).append(res)
                cpu = cpu_seconds(pids) - cpu0
                scraped_after = scrape(port)
                before, after = server_seconds(scraped), server_seconds(scraped_after)
                if name.startswith("replay"):  # recommendations by source: the path answering
                    answered = metric_totals(scraped, "recsys_recommendations_total", "source")
                    for k, v in metric_totals(
                        scraped_after, "recsys_recommendations_total", "source"
                    ).items():
                        paths[k] = paths.get(k, 0.0) + v - answered.get(k, 0.0)
                route = {"health/live": "/health/live", "events single": "/events"}.get(
                    name, "/recommendations"
                )
                c0, s0 = before.get(route, (0.0, 0.0))
                c1, s1 = after.get(route, (0.0, 0.0))
                # one worker's histogram when there are several: only meaningful for 1
                in_app = (s1 - s0) / (c1 - c0) * 1e3 if c1 > c0 and args.workers == 1 else None
                errors = sum(res.socket_errors.values())
                print(
                    f"wrk {name:<24} {res.requests_per_s:8.1f} req/s  p50 {res.p50_ms:6.2f} ms  "
                    f"p99 {res.p99_ms:6.2f} ms  max {res.max_ms:7.2f} ms  "
                    f"({res.requests:,} requests, non-2xx {res.non_2xx}, socket errors {errors})"
                )
                print(
                    f"    server CPU {cpu / max(1, res.requests) * 1e3:.3f} ms/request "
                    f"({cpu / args.duration:.0%} of one core)"
                    + (f", in-app time {in_app:.3f} ms/request" if in_app is not None else "")
                )
                if res.non_2xx or errors:
                    print(f"!!! {name}: {res.non_2xx} non-2xx responses, {res.socket_errors}")
                    print(res.raw)
                    if script is not None:
                        status, body = http_get(port, f"/recommendations?user_id={warm_ids[0]}")
                        print(f"sample answer: {status} {body[:500]!r}")
                    failures.append(f"{name}: {res.non_2xx} non-2xx, socket errors {errors}")
            if args.workers == 1:
                print(
                    "    (in-app = the service's own request-duration histogram, inside the "
                    "middleware stack; server CPU includes the kernel's share of the loopback "
                    "TCP and every thread)"
                )

            pids = descendants(proc.pid)
            mem = memory(pids)
            print(
                f"memory after load ({len(pids)} process(es)): RSS {gib(mem['rss'])}, "
                f"peak RSS {gib(mem['hwm'])}, PSS {gib(mem['pss'])}"
            )
        finally:
            stop(proc)
        ab_runs = [line for line in log.read_text().splitlines() if "A/B metrics of" in line]
        if ab_runs:
            print("A/B metrics task: " + "; ".join(line.split(": ", 1)[-1] for line in ab_runs))
        lines = log.read_text().splitlines()
        first = next((i for i, line in enumerate(lines) if "ERROR" in line), None)
        if first is not None:  # the first error with its traceback
            errors = sum("ERROR" in line for line in lines)
            end = next(
                (i for i in range(first + 1, len(lines)) if lines[i][:1] not in " T"), len(lines)
            )
            shown = [*lines[first : first + 2], "  ...", *lines[max(first + 2, end - 4) : end]]
            print(f"server log: {errors} error line(s), the first:\n  " + "\n  ".join(shown))

    # in process, after the server is gone: the same bundle, the model policy
    agree_pos = rng.choice(warm_pos, size=min(args.agreement_users, len(warm_pos)), replace=False)
    agree = agreement(bundle_dir, agree_pos, args.k)
    print(
        f"\nin-process: load {agree['load_s']:.2f} s, index build {agree['index_s']:.2f} s "
        f"({agree['n_items']:,} items x {agree['dim']}); per user top_k "
        f"{agree['fast_mean_ms']:.2f} ms (p99 {agree['fast_p99_ms']:.2f}), exact_top_k "
        f"{agree['exact_mean_ms']:.2f} ms (p99 {agree['exact_p99_ms']:.2f})"
    )

    if args.experiment:
        parts = model_memory(bundle_dir)
        print(
            f"RSS per loaded model (in process): bundle {mib(parts['bundle'])}, index + "
            f"champion Recommender {mib(parts['index_and_champion'])}, popular variant "
            f"{mib(parts['popular_variant'])}"
        )

    def ratio(name: str) -> list[float]:
        """Per round: the run's throughput / that round's health/live."""
        pairs = zip(results[name], results["health/live"], strict=True)
        return [r.requests_per_s / live.requests_per_s for r, live in pairs]

    def median(values: list[float]) -> float:
        return float(np.median(values))

    def spread(values: list[float], fmt: str = ".2f", unit: str = "") -> str:
        """``median (min-max over N rounds)``."""
        text = f"{median(values):{fmt}}{unit}"
        if len(values) > 1:
            text += f" ({min(values):{fmt}}-{max(values):{fmt}}{unit} over {len(values)} rounds)"
        return text

    def rate(name: str) -> list[float]:
        return [r.requests_per_s for r in results[name]]

    def p99(name: str) -> list[float]:
        return [r.p99_ms for r in results[name]]

    store = "PostgreSQL" if args.db_url and args.db_url.startswith("postgres") else "SQLite"
    goal_ratio = GOAL_RATIO_EXPERIMENT if args.experiment else GOAL_RATIO
    by_path = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(paths.items()) if v > 0)
    live_rate = spread(rate("health/live"), ".0f", " req/s")
    ratio_goals = [  # (name, what, goal ratio, goal p99 or None)
        (
            "recommendations warm",
            "warm visitors, precomputed"
            + (", with the two-variant experiment" if args.experiment else ""),
            goal_ratio,
            GOAL_P99_MS,
        ),
        (
            "events single",
            f"ingestion POST /events (one event per request, {store})",
            GOAL_INGEST_RATIO,
            GOAL_INGEST_P99_MS,
        ),
        (
            "recommendations browsing",
            "browsing visitors asking again (a view posted before the run)",
            GOAL_BROWSING_RATIO,
            GOAL_BROWSING_P99_MS,
        ),
        (
            "replay views + asks",
            f"replay of {min(replayed, len(replay_visitors)):,} of the data's last "
            f"{len(replay_visitors):,} views (view posted, then asked; "
            + ("each posted once" if replayed <= len(replay_visitors) else "SOME POSTED TWICE")
            + f"; {store}; p99 of a pair; answers by path: {by_path})",
            GOAL_REPLAY_RATIO,
            None,
        ),
    ]
    checks = [
        (
            f"start-up to ready {ready_s:.2f} s (goal <= {GOAL_STARTUP_S:.0f} s)",
            ready_s <= GOAL_STARTUP_S,
        )
    ]
    for name, what, goal, goal_p99 in ratio_goals:
        checks.append(
            (
                f"{what} / health-live = {spread(ratio(name))} (goal >= {goal:.2f}); "
                f"{spread(rate(name), '.0f', ' req/s')} vs health-live {live_rate}",
                median(ratio(name)) >= goal,
            )
        )
        if goal_p99 is not None:
            checks.append(
                (
                    f"p99 latency of {what.split(' (')[0]} {spread(p99(name), '.2f', ' ms')} "
                    f"(goal <= {goal_p99:.0f} ms)",
                    median(p99(name)) <= goal_p99,
                )
            )
    checks += [
        (
            f"top-{args.k} agreement fast vs exact: {agree['positions']:.2%} of positions "
            f"({agree['sets']:.2%} of items, {agree['lists']:.2%} of lists identical; "
            f"{len(agree_pos):,} warm users) (goal >= {GOAL_AGREEMENT:.0%})",
            agree["positions"] >= GOAL_AGREEMENT,
        ),
        (
            f"service memory RSS after load {gib(mem['rss'])} (goal <= {gib(GOAL_RSS_BYTES)})",
            mem["rss"] <= GOAL_RSS_BYTES,
        ),
    ]
    print("\n=== goals ===")
    for text, ok in checks:
        print(f"  [{verdict(ok)}] {text}")
    print(
        f"  [info] cold visitors / health-live = {spread(ratio('recommendations cold'))}, "
        f"p99 {spread(p99('recommendations cold'), '.2f', ' ms')}"
    )
    if failures:
        print("\nERRORS during load (results above are not valid):\n  " + "\n  ".join(failures))
        return 2
    return 1 if args.check and not all(ok for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
