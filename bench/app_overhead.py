"""What the web app adds on top of the engine, with the tiny model.

The same request (Generate tab, fixed seed) runs >= 20 times through gradio_client against a running `python app.py`,
>= 20 times through Gradio's plain HTTP route, and >= 20 times as a direct engine call, after warm-up; medians are
compared. A no-op endpoint through each client shows the floor that Gradio and the client cost on their own.
Also measured: time from starting `python app.py` to the page answering, and to the model being ready.

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
from _common import ROOT, machine_info, write_results

PROMPT = "a red fox in the snow, photograph"


def start_app(data: Path, port: int, extra_args=()):
    """``python app.py`` on ``port`` (rate limit off, then ``extra_args``): (process, its log file, seconds
    to the page, seconds to the model ready)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    log = open(data.parent / "app.log", "wb")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--data-dir", str(data), "--port", str(port), "--rate-limit", "0"]
        + list(extra_args),
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


def _median_after_warmup(fn, runs: int, warmup: int, after=None) -> tuple[list[float], list[float]]:
    times, extra = [], []
    for i in range(warmup + runs):
        t = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t
        if i >= warmup:
            times.append(elapsed)
            if after is not None:
                extra.append(after())
    return times, extra


GENERATE_ARGS = [PROMPT, "", "1:1", "1K", False, 1024, 1024, 4, 1.0, 7, False, 1, False, None]


def http_call(client: httpx.Client, name: str, data: list) -> None:
    """Gradio's REST route (what curl users call): queue the event, then read its SSE stream to the end."""
    r = client.post(f"call/{name}", json={"data": data})
    r.raise_for_status()
    event = r.json()["event_id"]
    with client.stream("GET", f"call/{name}/{event}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: error"):
                raise RuntimeError(f"{name} failed")


def time_app(url: str, data: Path, runs: int, warmup: int) -> dict:
    """Round trips of the same generation (and of a no-op endpoint) through gradio_client and plain HTTP."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    h = httpx.Client(base_url=url + "gradio_api/", timeout=120)
    inside = lambda: engine_seconds_of_latest_turn(data)  # noqa: E731
    out = {}
    out["client"], out["client_inside"] = _median_after_warmup(
        lambda: c.predict(PROMPT, seed=7, randomize=False, api_name="/generate"), runs, warmup, inside
    )
    out["client_noop"], _ = _median_after_warmup(lambda: c.predict(api_name="/stop_generate"), runs, warmup)
    lazy = Client(url, verbose=False, download_files=False)  # as a browser: the PNG is fetched only when shown
    out["client_nodl"], _ = _median_after_warmup(
        lambda: lazy.predict(PROMPT, seed=7, randomize=False, api_name="/generate"), runs, warmup
    )
    out["http"], out["http_inside"] = _median_after_warmup(
        lambda: http_call(h, "generate", GENERATE_ARGS), runs, warmup, inside
    )
    out["http_noop"], _ = _median_after_warmup(lambda: http_call(h, "stop_generate", [None]), runs, warmup)
    h.close()
    return out


def time_engine(runs: int, warmup: int) -> list[float]:
    from qwen_image.factory import build_engine, choose_setup
    from qwen_image.generation import GenerationRequest

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
            app = time_app(f"http://127.0.0.1:{args.port}/", data, args.runs, args.warmup)
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()

    med = {k: statistics.median(v) for k, v in app.items()}
    eng = statistics.median(engine_times)
    # what the app adds: round trip minus the same job as a direct in-process engine call
    added = {k: med[k] - eng for k in ("client", "http")}

    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    rows = [("direct engine call, in-process", ms(eng))]
    for k, label in (("client", "gradio_client"), ("http", "plain HTTP (`/gradio_api/call/generate`, as curl)")):
        rows += [
            (f"{label}: generation round trip", ms(med[k])),
            (f"{label}: engine time inside those requests", ms(med[k + "_inside"])),
            (f"{label}: a no-op endpoint's round trip (Gradio's own floor)", ms(med[k + "_noop"])),
            *(
                [("gradio_client: generation round trip without downloading the PNG", ms(med["client_nodl"]))]
                if k == "client"
                else []
            ),
            (f"{label}: **added by the app** (round trip minus direct engine)", f"**{ms(added[k])}**"),
        ]
    rows += [
        ("`python app.py` to page answering", f"{page_s:.1f} s"),
        ("`python app.py` to model ready", f"{ready_s:.1f} s"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    targets = {
        "added <= 100 ms (gradio_client)": added["client"] <= 0.100,
        "added <= 100 ms (plain HTTP)": added["http"] <= 0.100,
        "added <= 5% of the tiny model's time (plain HTTP)": added["http"] / eng <= 0.05,
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
            "engine_median_s": eng,
            "app_s": app,
            "app_median_s": med,
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
