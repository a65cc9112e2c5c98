"""What the web app adds on top of the engine, with the tiny model.

The same request (Generate tab, fixed seed) runs >= 20 times through gradio_client against a running `python app.py`
and >= 20 times as a direct engine call, after warm-up; medians are compared. Also measured: time from starting
`python app.py` to the page answering, and to the model being ready.

    python bench/app_overhead.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine_info, write_results  # noqa: E402

PROMPT = "a red fox in the snow, photograph"


def start_app(data: Path, port: int):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    log = open(data.parent / "app.log", "wb")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--data-dir", str(data), "--port", str(port), "--rate-limit", "0"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    page = ready = None
    while time.monotonic() - t0 < 300:
        try:
            if page is None and httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                page = time.monotonic() - t0
        except httpx.HTTPError:
            pass
        text = (data.parent / "app.log").read_text(errors="replace")
        if ready is None and "engine ready" in text:
            ready = time.monotonic() - t0
        if page is not None and ready is not None:
            break
        time.sleep(0.05)
    return proc, log, page, ready


def engine_seconds_of_latest_turn(data: Path) -> float:
    """The engine's own time for the job the app just ran (recorded in the turn), to subtract from the round trip."""
    import sqlite3

    con = sqlite3.connect(data / "history.sqlite3")
    try:
        row = con.execute("SELECT timings_json FROM turns ORDER BY created_at DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return json.loads(row[0])["total"]


def time_app(url: str, data: Path, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Round trips through gradio_client, and the engine time inside each of them."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    rtt, inside = [], []
    for i in range(warmup + runs):
        t = time.perf_counter()
        c.predict(PROMPT, seed=7, randomize=False, api_name="/generate")
        elapsed = time.perf_counter() - t
        if i >= warmup:
            rtt.append(elapsed)
            inside.append(engine_seconds_of_latest_turn(data))
    return rtt, inside


def time_engine(runs: int, warmup: int) -> list[float]:
    from qwen_image.factory import build_engine, choose_setup
    from qwen_image.requests import GenerationRequest

    engine = build_engine(choose_setup("tiny"))
    engine.start()
    engine.wait_ready()
    out = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        engine.generate(GenerationRequest(prompt=PROMPT, seed=7, aspect_ratio="1:1"))
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--port", type=int, default=7899)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the tiny model; both sides alike, less noise on a shared box
    engine_times = time_engine(args.runs, args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        proc, log, page_s, ready_s = start_app(data, args.port)
        try:
            app_times, inside = time_app(f"http://127.0.0.1:{args.port}/", data, args.runs, args.warmup)
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()

    eng, app = statistics.median(engine_times), statistics.median(app_times)
    # per request: round trip minus the engine's own time for that very job (robust to machine noise)
    added = statistics.median(a - b for a, b in zip(app_times, inside, strict=True))
    inside_med = statistics.median(inside)
    rows = [
        ("direct engine call, in-process (median)", f"{eng * 1000:.0f} ms"),
        ("through the app with gradio_client, round trip (median)", f"{app * 1000:.0f} ms"),
        ("engine time inside those app requests (median)", f"{inside_med * 1000:.0f} ms"),
        (
            "added by the app (median of round trip minus its engine time)",
            f"{added * 1000:.0f} ms ({added / inside_med * 100:.0f}% of the tiny model's time)",
        ),
        ("`python app.py` to page answering", f"{page_s:.1f} s"),
        ("`python app.py` to model ready", f"{ready_s:.1f} s"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    targets = {
        "added <= 100 ms": added <= 0.100,
        "added <= 5%": added / inside_med <= 0.05,
        "page within 5 s": page_s is not None and page_s <= 5.0,
    }
    for k, ok in targets.items():
        print(f"- target {k}: {'met' if ok else 'missed'}")
    write_results(
        "app_overhead",
        {
            "machine": machine_info(),
            "runs": args.runs,
            "engine_s": engine_times,
            "app_s": app_times,
            "engine_inside_app_s": inside,
            "engine_median_s": eng,
            "app_median_s": app,
            "added_s": added,
            "page_answering_s": page_s,
            "model_ready_s": ready_s,
            "targets": targets,
        },
        table + "\n\n" + "\n".join(f"- target {k}: {'met' if ok else 'missed'}" for k, ok in targets.items()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
