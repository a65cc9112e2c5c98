"""The web app through gradio_client against the launched app (tiny model, CPU)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from appserver import client, running_app
from gradio_client.exceptions import AppError
from PIL import Image

from conversations.store import Store

pytestmark = pytest.mark.slow

MSG = {"files": []}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("app-data")
    # a little slow motion per step, so that a job can be stopped or reloaded mid-way; Gradio keeps the state of 3
    # sessions only, so that every test also checks that a client whose session was let go carries on (ui/sessions.py)
    with running_app(data, args=["--max-sessions", "3"], env={"QIC_STEP_DELAY": "0.05"}) as proc:
        yield proc


def chat(c, text, **kw):
    return c.predict({**MSG, "text": text}, api_name="/chat", **kw)


def conversations(app, owner_hint_prompt: str):
    """Conversations (any owner) whose first turn has this prompt, read straight from the store."""
    store = Store(app.data_dir)
    try:
        rows = store._conn.execute(
            "SELECT c.owner_id, c.id FROM conversations c JOIN turns t ON t.conversation_id = c.id "
            "WHERE t.position = (SELECT MIN(position) FROM turns WHERE conversation_id = c.id) AND t.prompt = ?",
            (owner_hint_prompt,),
        ).fetchall()
        return [(r[0], r[1], store.get_conversation(r[0], r[1])) for r in rows]
    finally:
        store.close()


def test_chat_generate_edit_regenerate_branch_undo(app):
    c = client(app)
    out = chat(c, "a red fox in the snow")
    messages, info, download = out[0], out[1], out[2]
    assert messages[0]["role"] == "user" and "red fox" in str(messages[0]["content"])
    assert 'alt="a red fox in the snow"' in str(messages[1]["content"])  # the image, with the prompt as alt text
    assert info.startswith("#1")
    with Image.open(download) as im:
        assert "parameters" in im.info and "red fox" in im.info["parameters"]
    assert Path(download).name.startswith("a-red-fox-in-the-snow-")  # named after the prompt and seed

    out = chat(c, "make it blue")
    assert out[1].startswith("#2") and "next message edits the image of **#2**" in out[1]
    [(owner, conv_id, conv)] = conversations(app, "a red fox in the snow")
    first, second = conv.turns
    assert second.kind == "edit" and second.inputs[0].id == first.outputs[0].id

    # regenerate: a new version of the latest turn, in its place
    out = c.predict(api_name="/regenerate")
    conv = conversations(app, "a red fox in the snow")[0][2]
    assert len(conv.turns) == 2 and (conv.turns[1].version, conv.turns[1].versions) == (2, 2)
    assert conv.turns[1].prompt == "make it blue" and conv.turns[1].status == "done"
    assert conv.turns[1].outputs[0].seed != second.outputs[0].seed
    out = c.predict(2, -1, api_name="/show_version")  # back to the first version of turn 2
    assert conversations(app, "a red fox in the snow")[0][2].turns[1].id == second.id

    # branch from the first image
    sel = c.predict(1, api_name="/use_as_input")
    assert "edits the image of **#1**" in sel[1]
    chat(c, "add a hat")
    conv = conversations(app, "a red fox in the snow")[0][2]
    assert len(conv.turns) == 3
    assert conv.turns[2].inputs[0].id == conv.turns[0].outputs[0].id
    # the branch is used once: the next message edits the latest image again
    chat(c, "make the hat red")
    conv = conversations(app, "a red fox in the snow")[0][2]
    assert conv.turns[3].inputs[0].id == conv.turns[2].outputs[0].id

    undone_files = [o.path for o in conv.turns[3].outputs]
    c.predict(api_name="/undo")
    conv = conversations(app, "a red fox in the snow")[0][2]
    assert len(conv.turns) == 3
    assert not any(p.exists() for p in undone_files)


def test_the_tenth_edit_still_works_and_keeps_the_size(app):
    c = client(app)
    chat(c, "a wide mountain lake", ratio="16:9", steps=2)
    for n in range(1, 11):
        chat(c, f"edit number {n}", steps=2)
    [(owner, conv_id, conv)] = conversations(app, "a wide mountain lake")
    assert len(conv.turns) == 11 and all(t.status == "done" and len(t.outputs) == 1 for t in conv.turns)
    size = (conv.turns[0].settings["width"], conv.turns[0].settings["height"])
    assert size[0] > size[1]
    for before, turn in zip(conv.turns, conv.turns[1:], strict=False):
        assert turn.kind == "edit" and turn.inputs[0].id == before.outputs[0].id  # each edits the latest image
        assert (turn.settings["width"], turn.settings["height"]) == size
        with Image.open(turn.outputs[0].path) as im:
            assert im.size == size


def test_stop_mid_generation_then_next_request_works(app):
    c = client(app)
    job = c.submit({**MSG, "text": "a slow painting"}, steps=80, api_name="/chat")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the job is really denoising
        convs = conversations(app, "a slow painting")
        if convs and convs[0][2].turns and convs[0][2].turns[0].status == "running":
            break
        time.sleep(0.2)
    time.sleep(0.5)
    for action in ("/send_to_edit", "/use_as_input"):  # the running turn has no image yet: a clear answer
        with pytest.raises(AppError, match="still being made"):
            c.predict(*([[]] if action == "/send_to_edit" else []), api_name=action)
    assert c.predict(api_name="/stop") == "Stopping…"
    final = job.result(timeout=60)
    assert "Stopped" in str(final[0][-1]["content"])
    conv = conversations(app, "a slow painting")[0][2]
    assert conv.turns[0].status == "cancelled" and not conv.turns[0].outputs
    out = chat(c, "a quick sketch")
    assert out[1].startswith("#2")


def test_validation_error_then_success(app):
    c = client(app)
    with pytest.raises(AppError, match="Write a prompt"):
        chat(c, "   ")
    with pytest.raises(AppError, match="Steps must be between|greater than maximum"):
        chat(c, "a cat", steps=1000)
    with pytest.raises(AppError, match="control character"):
        chat(c, "a cat\x07")
    with pytest.raises(AppError, match="negative prompt"):
        chat(c, "a cat", cfg=4.0, negative="")
    out = chat(c, "a cat on a windowsill")
    assert out[1].startswith("#1")


def rest(app, api_name: str, *data):
    """One plain REST call (a new Gradio session each time, like curl); its last SSE line."""
    import httpx

    base = f"{app.url}gradio_api/call/{api_name}"
    event = httpx.post(base, json={"data": list(data)}, timeout=30).json()["event_id"]
    with httpx.stream("GET", f"{base}/{event}", timeout=120) as lines:
        return [line for line in lines.iter_lines() if line][-1]


def test_a_client_whose_session_was_let_go_keeps_its_owner_and_conversation(app):
    c = client(app)
    assert chat(c, "a lighthouse at dusk")[1].startswith("#1")
    for _ in range(4):  # four newer sessions: Gradio lets this client's go (--max-sessions 3)
        assert rest(app, "search_conversations", "lighthouse") == "data: [[], null]"  # each a new owner: nothing
    out = chat(c, "make it stormy")
    assert out[1].startswith("#2")  # the same conversation: the edit of its image
    assert [i["title"] for i in c.predict("lighthouse", api_name="/search_conversations")] == ["a lighthouse at dusk"]


def test_two_clients_never_see_each_other(app):
    a, b = client(app), client(app)
    errors = []

    def run(cl, prompt):
        try:
            chat(cl, prompt)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a, "alpha secret")), threading.Thread(target=run, args=(b, "beta"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    [(owner_a, conv_a, _)] = conversations(app, "alpha secret")
    [(owner_b, conv_b, _)] = conversations(app, "beta")
    assert owner_a != owner_b
    items = b.predict("alpha", api_name="/search_conversations")
    assert items == []
    assert [i["title"] for i in a.predict("alpha", api_name="/search_conversations")] == ["alpha secret"]
    with pytest.raises(AppError, match="No such conversation"):
        b.predict(conv_a, api_name="/open_conversation")
    # B's view of its own chat holds only its own turn
    out = b.predict(conv_b, api_name="/open_conversation")
    assert "alpha" not in str(out[0]) and "beta" in str(out[0])


def test_generate_and_edit_tabs(app, tmp_path):
    from gradio_client import handle_file

    c = client(app)
    gallery, info = c.predict("a lighthouse at night", num_images=2, api_name="/generate")[:2]
    assert len(gallery) == 2 and "seeds" in info
    png = gallery[0]["image"]
    with Image.open(png) as im:
        assert im.format == "PNG" and "lighthouse" in im.info["parameters"]
    refs = [{"image": handle_file(png), "caption": None}]
    gallery, info, compare, rewrite = c.predict(refs, "make it day", None, api_name="/edit")
    assert rewrite == ""  # not enhanced
    assert Path(gallery[0]["image"]).name.startswith("make-it-day-")
    assert len(gallery) == 1 and "seeds" in info
    # the before/after slider: the reference scaled to the result's size, and the result
    with Image.open(gallery[0]["image"]) as result, Image.open(compare[0]) as before, Image.open(compare[1]) as after:
        assert before.size == after.size == result.size
        assert list(after.convert("RGB").getdata()) == list(result.convert("RGB").getdata())


def test_a_marked_edit_compares_the_clean_reference(app, tmp_path):
    """The red marks go to the model; the before/after slider shows the reference as it was."""
    from gradio_client import handle_file

    c = client(app)
    ref = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(ref)
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 42, 42, 255), (8, 8, 40, 40))
    layer_path, composite = tmp_path / "layer.png", tmp_path / "composite.png"
    layer.save(layer_path)
    marked = Image.open(ref).convert("RGBA")
    marked.alpha_composite(layer)
    marked.save(composite)
    marks = {"background": handle_file(str(ref)), "layers": [handle_file(str(layer_path))],
             "composite": handle_file(str(composite))}  # fmt: skip
    refs = [{"image": handle_file(str(ref)), "caption": None}]
    gallery, info, compare, _ = c.predict(refs, "remove the marked square", marks, api_name="/edit")
    conv = [cv for _, _, cv in conversations(app, "remove the marked square")][0]
    with Image.open(conv.turns[0].inputs[0].path) as sent:
        assert sent.convert("RGB").getpixel((20, 20)) == (255, 42, 42)  # the model got the marks
    with Image.open(compare[0]) as before:
        r, g, b = before.convert("RGB").resize((64, 64)).getpixel((20, 20))
        assert b > r  # the slider's "before" is the clean (blue) reference


def test_enhance_endpoint_streams_and_enhanced_turns_keep_both_prompts(app):
    import json

    from qwen_image.metadata import JSON_KEY

    c = client(app)
    job = c.submit("a red fox", api_name="/enhance")
    updates = list(job)
    rewrite, line = job.result()
    assert rewrite and rewrite != "a red fox" and not line  # tiny model: gibberish (no JSON, so no ratio)
    assert len(updates) > 1  # streamed
    gallery, info, drawn = c.predict("a red fox", enhance=True, api_name="/generate")
    with Image.open(gallery[0]["image"]) as im:
        data = json.loads(im.info[JSON_KEY])
    assert data["original_prompt"] == "a red fox" and data["prompt"] == drawn != "a red fox"
    # the rewrite box edited by hand: drawn as written
    own = "a blue fox, watercolor"
    gallery, _, drawn = c.predict("a red fox", enhance=True, enhanced_prompt=own, api_name="/generate")
    with Image.open(gallery[0]["image"]) as im:
        assert json.loads(im.info[JSON_KEY])["prompt"] == own == drawn
    # a chat turn enhanced through the API: both prompts kept, the rewrite in its collapsible block
    messages, info, download = chat(c, "a fox in a chat", enhance=True)[:3]
    [(_, _, conv)] = conversations(app, "a fox in a chat")
    turn = conv.turns[0]
    assert turn.settings["original_prompt"] == "a fox in a chat" and turn.settings["prompt"] != "a fox in a chat"
    block = [m for m in messages if (m.get("metadata") or {}).get("title") == "✨ Enhanced prompt"]
    assert len(block) == 1 and 'name="rerun"' in str(block[0]["content"])
