"""Throughput with 1, 2 and 4 remote backends: does the pool use N servers N times as fast?

Four copies of the app run as OpenAI-Images servers (``python app.py --openai-api``, tiny model) whose images take a
fixed time each: the tiny engine's step delay (``QIC_STEP_DELAY``) times the steps, so a server's speed does not
depend on how busy this machine's CPU is. In front of the first N of them, the remote pool and the job queue exactly
as ``python app.py --backend URL ...`` builds them (without the web page, whose overhead ``app_overhead.py``
measures) take 16 generation requests at once; the wall time from the first submit to the last image gives the
throughput. Target: at least 0.85 x N times the throughput of one backend, for N = 2 and 4.

    python bench/backends.py [--requests 16] [--delay 0.5] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, machine_info, machine_line, markdown_table, write_results

sys.path.insert(0, str(ROOT / "tests"))
from appserver import AppProcess  # noqa: E402 - the tests' app launcher

COUNTS = (1, 2, 4)


def start_servers(root: Path, count: int, delay: float) -> list[AppProcess]:
    servers = [
        AppProcess(root / f"b{i}", ["--openai-api", "--rate-limit", "0"], env={"QIC_STEP_DELAY": str(delay)})
        for i in range(count)
    ]
    with ThreadPoolExecutor(count) as pool:  # they load in parallel
        return list(pool.map(lambda s: s.start(timeout=300), servers))


def run(urls: list[str], data: Path, requests: int, steps: int) -> dict:
    """``requests`` generations at once through the pool and the job queue; wall time until the last is done."""
    from conversations.jobs import JobManager
    from conversations.store import Store
    from conversations.turns import TurnService
    from qwen_image.generation import GenerationRequest
    from serving.pool import RemotePool

    pool = RemotePool.connect(urls)
    store = Store(data)
    jobs = JobManager(pool, store, max_queue=4 * requests, workers=pool.capabilities.concurrent_jobs)
    turns = TurnService(pool, store, jobs)
    owner = "bench"
    store.ensure_owner(owner)
    try:
        for i in range(len(urls)):  # warm-up: one image per server
            snap = turns.start(owner, None, GenerationRequest(prompt="warm-up", steps=steps, seed=i))
            list(jobs.follow(owner, snap.id))
        t0 = time.monotonic()
        snaps = [
            turns.start(owner, None, GenerationRequest(prompt=f"a red fox, take {i}", steps=steps, seed=i))
            for i in range(requests)
        ]
        finals = [list(jobs.follow(owner, s.id))[-1] for s in snaps]
        wall = time.monotonic() - t0
        failed = [f.error for f in finals if f.state != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} requests failed: {failed[:3]}")
        served = {s.name: s.served - 1 for s in pool.servers}  # minus the warm-up
        return {"wall_s": wall, "per_server": served}
    finally:
        jobs.shutdown()
        pool.close()
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=16, help="requests in flight at once")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds per denoising step on each backend")
    ap.add_argument("--steps", type=int, default=4, help="steps per image (time per image = delay x steps)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="qic-bench-backends-") as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        servers = start_servers(root, max(COUNTS), args.delay)
        print(f"{len(servers)} backends up in {time.monotonic() - t0:.0f} s", flush=True)
        rows = []
        try:
            for n in COUNTS:
                urls = [f"{s.url}v1" for s in servers[:n]]
                result = run(urls, root / f"a{n}", args.requests, args.steps)
                rows.append({"backends": n, "requests": args.requests, **result})
                print(f"{n} backend(s): {result['wall_s']:.1f} s, per server {result['per_server']}", flush=True)
        finally:
            for s in servers:
                s.stop()

    base = args.requests / rows[0]["wall_s"]
    for row in rows:
        row["images_per_s"] = args.requests / row["wall_s"]
        row["ratio"] = row["images_per_s"] / base
        row["efficiency"] = row["ratio"] / row["backends"]
        row["target"] = "-" if row["backends"] == 1 else ("met" if row["ratio"] >= 0.85 * row["backends"] else "missed")
        row["spread"] = ", ".join(str(v) for v in row["per_server"].values())
    ideal = args.delay * args.steps
    table = markdown_table(
        rows,
        [
            ("backends", "backends"),
            ("requests", "requests in flight"),
            ("wall_s", "wall s", 1),
            ("images_per_s", "images/s", 2),
            ("ratio", "throughput vs 1 backend", 2),
            ("efficiency", "ratio / N", 2),
            ("spread", "images per backend"),
            ("target", ">= 0.85 x N"),
        ],
    )
    text = (
        f"# Throughput with N remote backends\n\n{machine_line(info)}\n\n"
        f"Each backend: `python app.py --openai-api`, tiny model, {args.steps} steps x {args.delay} s step delay "
        f"(~{ideal:g} s per image); {args.requests} generations submitted at once to the pool + job queue of "
        f"`python app.py --backend ...`.\n\n{table}\n"
    )
    print(text)
    write_results("backends", {"machine": info, "args": vars(args), "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
