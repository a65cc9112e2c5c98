"""Bad input, file-route probes, upload limits, load and a full queue, against the launched app."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from appserver import ROOT, client, running_app
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from test_images import CASES

from conversations.store import Store

pytestmark = pytest.mark.slow
MSG = {"files": []}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("sec-data")
    with running_app(data, args=["--max-file-size", "2mb", "--rate-limit", "0"]) as proc:
        yield proc


def chat(c, text, files=(), **kw):
    return c.predict({"text": text, "files": [handle_file(str(f)) for f in files]}, api_name="/chat", **kw)


BAD = [c for c in CASES if c.error]


def test_bad_input_corpus_through_the_api(app, tmp_path):
    assert len(BAD) >= 20
    c = client(app)
    answers = {}
    for case in BAD:
        path = tmp_path / f"{case.id}{case.suffix}"
        path.write_bytes(case.make())
        with pytest.raises(AppError) as info:
            chat(c, "edit this", [path])
        message = str(info.value)
        # our own message names the problem; Gradio may refuse a file type before it reaches us
        assert all(part.lower() in message.lower() for part in case.error) or "file type" in message.lower(), (
            case.id,
            message,
        )
        answers[case.id] = message
        out = chat(c, "a plain valid request")  # and the next valid request succeeds
        assert "seed" in str(out[0][-1]["content"])
    assert len(answers) == len(BAD)


def test_file_route_probes_are_refused(app):
    c = client(app)
    chat(c, "a secret picture")
    store = Store(app.data_dir)
    try:
        [stored] = [p for p in store.image_root.rglob("*.png")][:1]
    finally:
        store.close()
    probes = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "....//....//etc/passwd",
        str(stored),  # a stored image, by its real path
        str(app.data_dir / "history.sqlite3"),
        str(app.data_dir / "secret.key"),
        str(ROOT / "app.py"),
    ]
    for probe in probes:
        r = httpx.get(f"{app.url}gradio_api/file={probe}", timeout=10)
        assert r.status_code in (403, 404), (probe, r.status_code)
        assert b"root:" not in r.content and b"SQLite" not in r.content


def test_oversize_upload_gets_413(app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024))
    with big.open("rb") as f:
        r = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=30)
    assert r.status_code == 413


def test_eight_clients_five_requests_each(app):
    clients = [client(app) for _ in range(8)]
    results: dict[int, list] = {i: [] for i in range(8)}
    errors = []

    def work(i):
        try:
            for k in range(5):
                out = chat(clients[i], f"client {i} request {k}")
                results[i].append(out)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors
    for i in range(8):
        assert len(results[i]) == 5
        last = str(results[i][-1][0])
        # every message of this client's conversation is its own, in order
        assert all(f"client {i} request {k}" in last for k in range(5))
        assert not any(f"client {j} request" in last for j in range(8) if j != i)
        assert "#5" in results[i][-1][1]


def test_full_queue_gets_a_clear_busy_message(tmp_path):
    with running_app(tmp_path / "data", args=["--queue-size", "2"], env={"QIC_STEP_DELAY": "0.5"}) as app:
        clients = [client(app) for _ in range(8)]
        jobs = [c.submit({**MSG, "text": f"job {i}"}, api_name="/chat") for i, c in enumerate(clients)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=180)
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(str(exc))
        refused = [o for o in outcomes if o != "ok"]
        assert refused and outcomes.count("ok") >= 2
        assert all("queue is full" in o.lower() or "busy" in o.lower() for o in refused), refused


def test_public_bind_without_auth_refuses_to_start(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode != 0
    assert "--auth" in r.stderr and "--public" in r.stderr
    assert not (Path(tmp_path) / "history.sqlite3").exists()  # refused before touching anything
