"""Does the launched app's memory stay flat over thousands of requests?

Starts ``python app.py --model tiny`` (default settings, the rate limiter on but out of reach) and runs two phases
against it, sampling the server process's RSS and open file descriptors (psutil) every ``--every`` requests:

- one session: ``--n`` generations (default 2,000) through one gradio_client ``Client``, as a user chatting: a new
  conversation, then four edits of its latest image, and again;
- new sessions: ``--n / 2`` generations, each a plain REST call (``/gradio_api/call/v2/chat``, what curl sends): a new
  Gradio session and a new anonymous owner every time.

After a warm-up of ``--warmup`` requests (default 200) the RSS may grow by at most ``--limit-mib`` (10 MiB) in each
phase (the highest sample after the warm-up against the sample at the warm-up), and the descriptor count must stay
flat (within ``--fd-slack`` of it). Prints a table and writes bench/results/soak.json and soak.md.

    python bench/soak.py [--n 2000] [--every 100] [--warmup 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from _common import machine_info, machine_line, markdown_table, write_results
from app_overhead import start_app

EDITS_PER_CONVERSATION = 4
PROMPTS = ("a lighthouse on a cliff at dusk", "make the sky stormy", "add a small boat", "night, stars", "paint it")


def sample(proc: psutil.Process, done: int, started: float) -> dict:
    return {
        "requests": done,
        "rss_mib": proc.memory_info().rss / 2**20,
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "seconds": time.monotonic() - started,
    }


def one_session(url: str, n: int, every: int, proc: psutil.Process) -> list[dict]:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    started = time.monotonic()
    samples = [sample(proc, 0, started)]
    for i in range(n):
        step = i % (EDITS_PER_CONVERSATION + 1)
        if step == 0 and i:
            client.predict(0, api_name="/new_chat")
        out = client.predict({"text": f"{PROMPTS[step]} {i}", "files": []}, api_name="/chat")
        if "done" not in out[1] and "seed" not in out[1]:
            raise RuntimeError(f"generation {i} did not finish: {out[1]!r}")
        if (i + 1) % every == 0:
            samples.append(sample(proc, i + 1, started))
            print(f"  one session: {i + 1} generations, RSS {samples[-1]['rss_mib']:.1f} MiB", flush=True)
    client.close()
    return samples


def rest_chat(http: httpx.Client, text: str) -> None:
    """One plain REST call (a new Gradio session): queue the event, then read its SSE stream to the end."""
    r = http.post("call/v2/chat", json={"message": {"text": text, "files": []}})
    r.raise_for_status()
    event = r.json()["event_id"]
    last = ""
    with http.stream("GET", f"call/chat/{event}") as stream:
        for line in stream.iter_lines():
            last = line or last
            if line.startswith("event: error"):
                raise RuntimeError(f"a REST generation failed: {stream.read()!r}")
    if "seed" not in last:
        raise RuntimeError(f"a REST generation did not finish: {last[:200]!r}")


def new_sessions(url: str, n: int, every: int, proc: psutil.Process) -> list[dict]:
    started = time.monotonic()
    samples = [sample(proc, 0, started)]
    with httpx.Client(base_url=url + "gradio_api/", timeout=300) as http:
        for i in range(n):
            rest_chat(http, f"{PROMPTS[0]} {i}")
            if (i + 1) % every == 0:
                samples.append(sample(proc, i + 1, started))
                print(f"  new sessions: {i + 1} requests, RSS {samples[-1]['rss_mib']:.1f} MiB", flush=True)
    return samples


def verdict(name: str, samples: list[dict], warmup: int, limit_mib: float, fd_slack: int) -> dict:
    base = next((s for s in samples if s["requests"] >= warmup), samples[-1])
    after = [s for s in samples if s["requests"] >= base["requests"]]
    growth = max(s["rss_mib"] for s in after) - base["rss_mib"]
    fds = [s["fds"] for s in after]
    span = after[-1]["requests"] - base["requests"]
    slope = (after[-1]["rss_mib"] - base["rss_mib"]) * 1024 / span if span else 0.0
    return {
        "phase": name,
        "requests": samples[-1]["requests"],
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_warm_mib": base["rss_mib"],
        "rss_end_mib": samples[-1]["rss_mib"],
        "growth_mib": growth,
        "kib_per_request": slope,
        "fds_warm": base["fds"],
        "fds_range": f"{min(fds)}-{max(fds)}",
        "seconds_per_request": samples[-1]["seconds"] / max(1, samples[-1]["requests"]),
        "ok": growth <= limit_mib and max(fds) - base["fds"] <= fd_slack,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="generations in one session (and n/2 from new sessions)")
    ap.add_argument("--every", type=int, default=100, help="sample every this many requests")
    ap.add_argument("--warmup", type=int, default=200, help="requests before the baseline sample")
    ap.add_argument("--limit-mib", type=float, default=10.0)
    ap.add_argument("--fd-slack", type=int, default=4, help="descriptors above the warm-up count still called flat")
    ap.add_argument("--port", type=int, default=7897)
    ap.add_argument("--name", default="soak", help="results file name under bench/results")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    info = machine_info()
    url = f"http://127.0.0.1:{args.port}/"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # the rate limiter on (it keeps a record per owner) but never reached
        app, log, _, ready = start_app(data, args.port, ["--model", "tiny", "--rate-limit", "1000000"])
        if ready is None:
            print(Path(log.name).read_text(errors="replace")[-3000:], file=sys.stderr)
            raise SystemExit("the app did not get ready")
        try:
            server = psutil.Process(app.pid)
            print(f"one session: {args.n} generations", flush=True)
            single = one_session(url, args.n, args.every, server)
            print(f"new sessions: {args.n // 2} requests", flush=True)
            fresh = new_sessions(url, args.n // 2, args.every, server)
        finally:
            app.terminate()
            app.wait(30)
            log.close()

    rows = [
        verdict("one session (gradio_client, /chat)", single, args.warmup, args.limit_mib, args.fd_slack),
        verdict("a new session per request (REST /chat)", fresh, args.warmup, args.limit_mib, args.fd_slack),
    ]
    columns = [
        ("phase", "phase"),
        ("requests", "requests"),
        ("rss_start_mib", "RSS at start MiB", 1),
        ("rss_warm_mib", f"RSS after {args.warmup} MiB", 1),
        ("rss_end_mib", "RSS at end MiB", 1),
        ("growth_mib", "growth after warm-up MiB", 2),
        ("kib_per_request", "KiB / request after warm-up", 2),
        ("fds_warm", "fds after warm-up"),
        ("fds_range", "fds after warm-up (range)"),
        ("seconds_per_request", "s / request", 2),
        ("ok", f"<= {args.limit_mib:g} MiB, fds flat"),
    ]
    table = markdown_table(rows, columns)
    samples_rows = [{"phase": "one session", **s} for s in single] + [{"phase": "new sessions", **s} for s in fresh]
    samples_table = markdown_table(
        samples_rows,
        [("phase", "phase"), ("requests", "requests"), ("rss_mib", "RSS MiB", 1), ("fds", "fds"),
         ("threads", "threads"), ("seconds", "s", 0)],
    )  # fmt: skip
    md = (
        f"# Soak: the launched app's memory over {args.n} + {args.n // 2} requests\n\n{machine_line(info)}\n\n"
        f"`python bench/soak.py --n {args.n} --every {args.every} --warmup {args.warmup}` (tiny model, default app "
        f"settings; model ready after {ready:.0f} s)\n\n{table}\n\nSamples:\n\n{samples_table}\n"
    )
    print(md)
    write_results(args.name, {"machine": info, "args": vars(args), "summary": rows, "samples": samples_rows}, md)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
