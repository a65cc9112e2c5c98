"""Failover between real processes: app A in front of two apps B1 and B2 (tiny model, ``--openai-api``).

B1 is killed while it makes A's image: the job completes on B2 and the user is told. With both down, a new message
gets a clear error and nothing is stored.
"""

from __future__ import annotations

import time

import pytest
from appserver import AppProcess, client
from gradio_client.exceptions import AppError

from conversations.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover")
    # B1 is slow (1 s per step, 4 steps): long enough to be killed mid-job
    b1 = AppProcess(root / "b1", ["--openai-api"], env={"QIC_STEP_DELAY": "1.0"}).start()
    b2 = AppProcess(root / "b2", ["--openai-api"]).start()
    backends = ["--backend", f"{b1.url}v1", "--backend", f"{b2.url}v1", "--backend-check-interval", "1"]
    a = AppProcess(root / "a", backends).start()
    yield b1, b2, a
    for app in (a, b1, b2):
        app.stop()


def conversations(app: AppProcess) -> list:
    store = Store(app.data_dir)
    try:
        owners = [r[0] for r in store._conn.execute("SELECT id FROM owners")]
        return [store.get_conversation(o, c.id) for o in owners for c in store.list_conversations(o, limit=1000)]
    finally:
        store.close()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def test_a_killed_backend_fails_over_and_with_both_down_nothing_is_stored(apps):
    b1, b2, a = apps
    c = client(a)
    job = c.submit({"text": "a lighthouse in a storm", "files": []}, api_name="/chat")
    wait_for(lambda: "OpenAI API: generation request" in b1.log(), 120, "B1 never got the request")
    b1.kill9()  # mid-job
    out = job.result(timeout=180)
    status = out[1]  # the info line ends with the job's notes
    assert f"{b1.url[7:-1]} failed" in status and f"made on {b2.url[7:-1]} instead" in status, status
    [conv] = [c for c in conversations(a) if c.turns[0].prompt == "a lighthouse in a storm"]
    [turn] = conv.turns
    assert turn.status == "done" and len(turn.outputs) == 1
    assert [t.prompt for conv in conversations(b2) for t in conv.turns] == ["a lighthouse in a storm"]

    b2.kill9()
    wait_for(lambda: "image server " + b2.url[7:-1] + " is down" in a.log(), 30, "A never noticed B2 went down")
    before = len(conversations(a))
    with pytest.raises(AppError, match="No image server can take this request right now"):
        c.predict({"text": "a boat", "files": []}, api_name="/chat")
    assert len(conversations(a)) == before  # nothing stored half-way
    assert all(t.status == "done" for conv in conversations(a) for t in conv.turns)
