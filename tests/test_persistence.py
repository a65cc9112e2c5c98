"""Nothing is lost: server restarts, kill -9 during a job, export/import and reuse through the API."""

from __future__ import annotations

import time

import pytest
from appserver import AppProcess, client
from gradio_client import handle_file
from PIL import Image

from conversations.store import Store

pytestmark = pytest.mark.slow
MSG = {"files": []}


def chat(c, text, **kw):
    return c.predict({**MSG, "text": text}, api_name="/chat", **kw)


def all_turns(data_dir):
    """Every conversation and turn in the store, any owner."""
    store = Store(data_dir)
    try:
        rows = store._conn.execute("SELECT owner_id, id FROM conversations ORDER BY created_at").fetchall()
        return [store.get_conversation(r[0], r[1]) for r in rows]
    finally:
        store.close()


def files_on_disk(data_dir):
    return sorted(p for p in (data_dir / "images").rglob("*") if p.is_file())


def wait_running(data_dir, prompt, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for conv in all_turns(data_dir):
            for turn in conv.turns:
                if turn.prompt == prompt and turn.status == "running":
                    return
        time.sleep(0.2)
    raise TimeoutError(f"job {prompt!r} never started")


def test_restart_keeps_every_turn_and_image(tmp_path):
    data = tmp_path / "data"
    app = AppProcess(data).start()
    try:
        c = client(app)
        chat(c, "a castle on a hill")
        chat(c, "add a dragon")
        before = all_turns(data)
        paths = [o.path for t in before[0].turns for o in t.outputs]
    finally:
        app.stop()
    app = AppProcess(data).start()  # same data folder, new process
    try:
        after = all_turns(data)
        assert [t.prompt for t in after[0].turns] == ["a castle on a hill", "add a dragon"]
        assert [o.path for t in after[0].turns for o in t.outputs] == paths
        for path in paths:
            with Image.open(path) as im:
                assert im.info.get("qwen_image_chat")
        # and the app still works on top of it
        assert "#1" in chat(client(app), "a new idea")[1]
    finally:
        app.stop()


def test_kill9_during_a_job_loses_nothing_else(tmp_path):
    data = tmp_path / "data"
    app = AppProcess(data, env={"QIC_STEP_DELAY": "0.1"}).start()
    try:
        c = client(app)
        chat(c, "first picture")
        chat(c, "second picture")
        done_files = files_on_disk(data)
        c.submit({**MSG, "text": "interrupted picture"}, steps=100, api_name="/chat")
        wait_running(data, "interrupted picture")
        time.sleep(0.5)
        app.kill9()
        # after the crash: earlier turns intact, the interrupted one still "running" until recovery, no new file
        assert files_on_disk(data) == done_files
        assert not list((data / "images").rglob(".tmp-*"))
    finally:
        app.stop()
    app = AppProcess(data).start()
    try:
        [conv] = all_turns(data)
        statuses = [(t.prompt, t.status) for t in conv.turns]
        assert statuses == [("first picture", "done"), ("second picture", "done"), ("interrupted picture", "failed")]
        assert "interrupted" in conv.turns[2].error
        assert not conv.turns[2].outputs
        for turn in conv.turns[:2]:
            for out in turn.outputs:
                with Image.open(out.path) as im:
                    im.load()
        assert files_on_disk(data) == done_files
        assert "Data:" in app.log() and "interrupted job(s) marked failed" in app.log()
    finally:
        app.stop()


def test_export_import_and_reuse_settings(tmp_path):
    data = tmp_path / "data"
    app = AppProcess(data).start()
    try:
        c = client(app)
        chat(c, "a teapot", seed=1234, randomize=False, steps=3)
        chat(c, "make it gold")
        zip_path = c.predict(api_name="/export_conversation")
        # reuse settings of turn 1: the panel gets its seed and steps, the message box its prompt
        values = c.predict(1, api_name="/reuse_settings")
        assert values[2] == 3 and values[5] == 1234 and values[6] is False
        assert values[-1]["text"] == "a teapot"
        # from a PNG made by this app
        png = chat(c, "a cup", seed=77, randomize=False)[2]
        values = c.predict(handle_file(png), api_name="/reuse_settings_from_png")
        assert values[5] == 77 and values[-1]["text"] == "a cup"

        other = client(app)  # another owner imports the zip
        out = other.predict(handle_file(zip_path), api_name="/import_conversation")
        text = str(out[0])
        assert "a teapot" in text and "make it gold" in text
        convs = all_turns(data)
        imported = [cv for cv in convs if cv.owner_id != convs[0].owner_id]
        assert len(imported) == 1 and [t.prompt for t in imported[0].turns] == ["a teapot", "make it gold"]
        src = convs[0].turns[0].outputs[0].path
        dst = imported[0].turns[0].outputs[0].path
        assert src != dst
        with Image.open(src) as a, Image.open(dst) as b:
            assert a.tobytes() == b.tobytes()
    finally:
        app.stop()
