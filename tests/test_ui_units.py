"""UI pieces without a server: who the caller is, escaping, rendering, panel values -> requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conversations.owners import Owners, OwnerTokens
from conversations.settings import AUTO, MATCH, TurnSettings, stored_request
from conversations.store import Store
from qwen_image.generation import resolve
from qwen_image.registry import load_registry
from ui import render
from ui.context import AppContext


@pytest.fixture
def ctx(tmp_path):
    store = Store(tmp_path)
    owners = Owners(OwnerTokens(tmp_path), store)
    c = AppContext(backend=None, store=store, jobs=None, turns=None, owners=owners, media=None, data_dir=tmp_path)
    yield c
    store.close()


def test_browser_token_round_trip_and_forgeries(ctx, tmp_path):
    owner, token = ctx.restore(None)
    assert owner.startswith("anon-") and token
    assert ctx.restore(token) == (owner, token)  # a reload keeps the owner
    forged = owner + "." + "0" * 32
    other_server = OwnerTokens(tmp_path / "elsewhere").new_token()
    for bad in (forged, token[:-1], token + "x", other_server, "", "a" * 100_000, 42, {"owner": owner}, ["x"]):
        new_owner, new_token = ctx.restore(bad)
        assert new_owner != owner and new_token != token  # a fresh, empty identity; nothing breaks
    conv = ctx.store.create_conversation(owner)
    stranger, _ = ctx.restore(forged)
    assert ctx.store.get_conversation(stranger, conv) is None
    assert ctx.store.list_conversations(stranger) == []


def test_logged_in_users_are_their_own_owner(ctx):
    alice = SimpleNamespace(username="alice")
    owner, token = ctx.restore(None, alice)
    assert token is None and owner == ctx.restore("anything", alice)[0]
    assert owner != ctx.restore(None, SimpleNamespace(username="bob"))[0]
    assert ctx.owner(None, alice) == owner


def test_user_text_is_escaped():
    nasty = "<img src=x onerror=alert(1)> **bold** [link](javascript:alert(1)) ![i](http://evil/x.png)"
    out = render.escape_md(nasty)
    assert "<img" not in out and "&lt;img" in out
    assert "](" not in out.replace("\\]\\(", "")  # no live markdown link or image
    assert render.escape_html('"<b>"') == "&quot;&lt;b&gt;&quot;"


def test_conversation_messages_map_every_message_to_its_turn():
    img = SimpleNamespace(id="i1", role="output", seed=5)
    upload = SimpleNamespace(id="u1", role="input", seed=None)
    t1 = SimpleNamespace(
        id="t1",
        prompt="a <b>cat</b>",
        inputs=(),
        outputs=(img,),
        status="done",
        error="",
        settings={"width": 64, "height": 64, "steps": 4},
        timings={"total": 1.0},
    )
    t2 = SimpleNamespace(
        id="t2",
        prompt="edit",
        inputs=(img, upload),
        outputs=(),
        status="failed",
        error="<script>x</script>",
        settings={},
        timings={},
    )
    conv = SimpleNamespace(turns=(t1, t2))
    messages, owners = render.conversation_messages(conv, lambda rec: f"/p/{rec.id}.webp")
    assert len(messages) == len(owners)
    assert owners == ["t1", "t1", "t1", "t2", "t2", "t2"]
    assert "&lt;b&gt;" in messages[0]["content"]
    assert messages[4]["content"]["path"] == "/p/u1.webp"  # the attachment, not the edited image
    assert "&lt;script&gt;" in messages[-1]["content"]
    assert "seed 5" in messages[2]["content"] and "64×64" in messages[2]["content"]


def test_finished_turns_link_their_full_resolution_pngs(tmp_path):
    from ui.media import Media

    png = tmp_path / "stored.png"
    png.write_bytes(b"\x89PNG fake")
    outs = tuple(SimpleNamespace(id=f"i{n}", role="output", seed=n, path=png) for n in (7, 8))
    turn = SimpleNamespace(
        id="t", prompt="p", inputs=(), outputs=outs, status="done", error="", settings={}, timings={}
    )
    media = Media(tmp_path / "out box")
    line = render.turn_messages(turn, lambda rec: "x.webp", 3, media.download_url)[-1]["content"]
    assert "[⬇ 1](gradio_api/file=" in line and "[⬇ 2](" in line
    assert "out%20box/downloads/i8/qwen-image-3-8.png)" in line  # quoted, named after turn and seed
    assert (tmp_path / "out box/downloads/i8/qwen-image-3-8.png").read_bytes() == png.read_bytes()
    single = SimpleNamespace(**{**vars(turn), "outputs": outs[:1]})
    assert "[⬇ PNG](" in render.turn_messages(single, lambda rec: "x.webp", 1, media.download_url)[-1]["content"]


def test_panel_values_become_requests():
    spec = load_registry().get("qwen-image-2.1")
    v = TurnSettings(AUTO, "1K", 30, 4.0, "blurry", 123, False, 2, True)
    r = v.request(spec, "a cat")
    assert (r.aspect_ratio, r.steps, r.true_cfg, r.negative_prompt, r.seed, r.num_images, r.transparent) == (
        None,
        30,
        4.0,
        "blurry",
        123,
        2,
        True,
    )
    assert resolve(r, spec).aspect_ratio == "1:1"  # auto without an image: square
    r = TurnSettings(AUTO, "1K", 30, 1.0, "ignored", 5, True, 1, False).request(spec, "edit")
    assert r.aspect_ratio is None and r.negative_prompt is None and r.seed is None and r.images == ()
    # the Edit tab: follow a reference's shape, or a chosen ratio; an explicit size wins over both
    follow = TurnSettings(MATCH).request(spec, "edit", match_reference=2, marked=True)
    assert (follow.aspect_ratio, follow.match_reference, follow.marked) == (None, 2, True)
    assert TurnSettings("16:9").request(spec, "edit", match_reference=2).match_reference is None
    sized = TurnSettings("16:9").request(spec, "p", size=(640, 480))
    assert (sized.aspect_ratio, sized.width, sized.height) == (None, 640, 480)
    again = stored_request(
        "a cat",
        {
            "width": 640,
            "height": 480,
            "steps": 30,
            "true_cfg": 4.0,
            "negative_prompt": "blurry",
            "seed": 9,
            "num_images": 1,
            "marked": True,
        },
    )
    assert (again.width, again.height, again.seed, again.negative_prompt, again.marked) == (
        640,
        480,
        None,
        "blurry",
        True,
    )


def test_stored_settings_refill_the_panel():
    spec = load_registry().get("qwen-image")
    back = TurnSettings.from_stored(
        spec, {"aspect_ratio": "16:9", "tier": "1K", "steps": 20, "true_cfg": 2.5, "seed": 7}
    )
    assert back == TurnSettings("16:9", "1K", 20, 2.5, "", 7, False, 1, False)
    odd = TurnSettings.from_stored(spec, {"aspect_ratio": "5:1", "tier": "9K", "seed": "x", "transparent": True})
    assert odd == TurnSettings(AUTO, spec.default_tier, spec.steps, spec.true_cfg, "", 0, True, 1, False)
