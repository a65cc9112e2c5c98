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
from ui.i18n import Tr


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


def _turn(id, prompt, outputs=(), inputs=(), status="done", error="", settings=None, versions=1, version=1):
    return SimpleNamespace(
        id=id,
        prompt=prompt,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        status=status,
        error=error,
        settings=settings or {"width": 64, "height": 48, "steps": 4},
        timings={"total": 1.0},
        versions=versions,
        version=version,
    )


LINKS = render.Links(
    lambda rec: f"/p/{rec.id}.webp", lambda rec, prompt: (f"/d/{rec.id}.png", f"{prompt}-{rec.seed}.png")
)


def test_bubbles_escape_user_text_and_carry_their_actions():
    img = SimpleNamespace(id="i1", role="output", seed=5)
    upload = SimpleNamespace(id="u1", role="input", seed=None)
    t1 = _turn("t1", 'a <b>cat</b> "x"', outputs=(img,))
    t2 = _turn("t2", "edit", inputs=(img, upload), status="failed", error="<script>x</script>")
    conv = SimpleNamespace(turns=(t1, t2))
    messages = render.conversation_messages(conv, LINKS, Tr())
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert "&lt;b&gt;cat&lt;/b&gt;" in messages[0]["content"] and "<b>cat" not in messages[0]["content"]
    result = messages[1]["content"]
    assert 'alt="a &lt;b&gt;cat&lt;/b&gt; &quot;x&quot;"' in result  # the prompt is the image's alt text
    for action in ("edit", "regenerate", "reuse", "to_edit"):
        assert f'name="{action}" value="t1"' in result
    assert 'download="a &lt;b&gt;cat&lt;/b&gt; &quot;x&quot;-5.png"' in result and "seed 5" in result
    assert "/p/u1.webp" in messages[2]["content"] and "qic-branch" not in messages[2]["content"]  # the latest: no chip
    assert "&lt;script&gt;" in messages[3]["content"] and 'name="regenerate"' in messages[3]["content"]
    assert all("\n" not in m["content"] for m in messages)  # one HTML block each: Markdown leaves them alone


def test_versions_branches_and_progress_in_the_bubbles():
    a, b = SimpleNamespace(id="a", role="output", seed=1), SimpleNamespace(id="b", role="output", seed=2)
    t1 = _turn("t1", "fox", outputs=(a,))
    t2 = _turn("t2", "blue", outputs=(b,), inputs=(a,), versions=3, version=2)
    t3 = _turn("t3", "hat", inputs=(a,), status="running")  # edits #1 although #2 is the latest: a branch
    from PIL import Image

    from qwen_image.backend import Progress

    live = SimpleNamespace(
        state="running", position=0, progress=Progress("denoising", 3, 8, 1.0, 4.0, "", Image.new("RGB", (32, 16)))
    )
    messages = render.conversation_messages(SimpleNamespace(turns=(t1, t2, t3)), LINKS, Tr(), {"t3": live})
    assert "2/3" in messages[3]["content"] and 'value="t2:-1"' in messages[3]["content"]
    assert "qic-branch" in messages[4]["content"] and "edits image #1" in messages[4]["content"]
    pending = messages[5]["content"]
    assert "Step 3/8" in pending and "about 4 s left" in pending and 'name="stop" value="t3"' in pending
    assert "data:image/webp;base64," in pending and '<progress value="3" max="8"' in pending


def test_composer_chip_and_placeholder():
    from conversations.turns import EditTarget

    img = SimpleNamespace(id="a")
    latest = EditTarget("latest", img, 3)
    assert "Editing the latest image (#3)" in render.chip_html(latest, LINKS, Tr())
    assert "qic-chip-attach" in render.chip_html(latest, LINKS, Tr())  # shown by CSS while files are attached
    chosen = render.chip_html(EditTarget("branch", img, 1), LINKS, Tr())
    assert "Editing image #1" in chosen and 'name="unchip"' in chosen
    assert "#3" in render.placeholder(latest, Tr()) and "create" in render.placeholder(EditTarget("none"), Tr())
    assert "编辑" in render.chip_html(latest, LINKS, Tr("zh-CN"))


def test_enhanced_prompts_rewrites_under_way_and_the_redo_chip():
    img = SimpleNamespace(id="i1", role="output", seed=5)
    settings = {"width": 64, "height": 48, "prompt": "A <b>red</b> fox\nat dawn", "original_prompt": "fox"}
    enhanced = _turn("t1", "fox", outputs=(img,), settings=settings)
    plain = _turn("t2", "blue", outputs=(img,))
    writing = SimpleNamespace(id="r1", prompt="a <hat>", text="A wide", attachments=2)
    messages = render.conversation_messages(SimpleNamespace(turns=(enhanced, plain)), LINKS, Tr(), rewrites=[writing])
    assert [m.get("metadata", {}).get("status") for m in messages] == [
        None,
        "done",
        None,
        None,
        None,
        None,
        "pending",
        None,
    ]
    block = messages[1]
    assert block["metadata"]["title"] == "✨ Enhanced prompt"  # collapsed: the chatbot shows it as a closed block
    assert (
        "A &lt;b&gt;red&lt;/b&gt; fox<br>at dawn" in block["content"] and 'name="rerun" value="t1"' in block["content"]
    )
    user, streaming, pending = messages[5:]
    assert "a &lt;hat&gt;" in user["content"] and "2 attached image(s)" in user["content"]
    assert "qic-turn-3" in user["content"] and "#3" in pending["content"]  # after the conversation's two turns
    assert streaming["metadata"]["title"] == "✨ Enhancing the prompt…" and "A wide" in streaming["content"]
    assert 'name="stop" value="r1"' in pending["content"] and "qic-pending" in pending["content"]
    running = _turn("t3", "fox", status="running", settings=settings)  # no "Edit" while its image is made
    assert 'name="rerun"' not in render.enhanced_message(running, Tr())["content"]
    assert "优化后的提示词" in render.enhanced_message(enhanced, Tr("zh-CN"))["metadata"]["title"]
    assert render.redo_html(None, Tr()) == ""
    only = render.redo_html({"kind": "only", "original": "a <b> fox", "ratio": "16:9"}, Tr())
    assert "Enhanced from “a &lt;b&gt; fox”" in only and "16:9" in only and 'name="unredo"' in only
    assert "new version of #2" in render.redo_html({"kind": "rerun", "original": "x", "n": 2}, Tr())


def test_shape_and_resolution_labels_say_what_they_do():
    from ui.settings import TIER_WORDS, auto_label, tier_choices

    spec = load_registry().get("qwen-image-2.1")
    assert auto_label(False, Tr()) == "Auto (1:1)" and auto_label(True, Tr()) == "Auto (keep shape)"
    assert auto_label(True, Tr("zh-CN")) == "自动（保持形状）"
    labels = [(str(label), value) for label, value in tier_choices(spec)]
    assert [v for _, v in labels] == ["1K", "1.5K", "2K"]  # the values the API takes stay
    words = [Tr(lang)(TIER_WORDS[v]) for _, v in labels for lang in ("en", "zh-CN")]
    assert words[:2] == ["Standard", "标准"] and not any(n in w for w in words for n in ("1K", "1.5K", "2K"))
    assert labels[0][0].endswith(" · 1024 px") and "settings.tier_standard" in labels[0][0]


def test_the_demo_models_status_says_what_it_does():
    from ui.app import status_line

    def line(state, demo, lang="en"):
        status = SimpleNamespace(state=state, demo=demo, model_label="Qwen-Image-2.1", message="")
        return status_line(SimpleNamespace(backend=SimpleNamespace(status=status)), Tr(lang))

    assert "starting the demo model" in line("loading", True) and "download" not in line("loading", True)
    assert "downloads" in line("loading", False) and "random noise" not in line("loading", False)
    assert "random noise" in line("ready", True) and len(Tr()("status.demo_note")) <= 50
    assert "正在启动演示模型" in line("loading", True, "zh-CN")


def test_download_names_are_a_prompt_slug_and_the_seed(tmp_path):
    from ui.media import Media, file_name

    assert file_name("A red fox, in the snow!", 123) == "a-red-fox-in-the-snow-123.png"
    assert file_name("一只红狐狸", 5) == "一只红狐狸-5.png"
    assert file_name("../../etc/passwd", 1) == "etc-passwd-1.png" and file_name("***", 9) == "qwen-image-9.png"
    assert len(file_name("word " * 50, 1)) < 70
    png = tmp_path / "stored.png"
    png.write_bytes(b"\x89PNG fake")
    media = Media(tmp_path / "out box")
    url, name = media.download_link(SimpleNamespace(id="i8", seed=8, path=png), "a cat")
    assert name == "a-cat-8.png" and url.endswith("out%20box/downloads/i8/a-cat-8.png")
    assert (tmp_path / "out box/downloads/i8/a-cat-8.png").read_bytes() == png.read_bytes()


def test_every_string_exists_in_both_languages_with_the_same_fields():
    import string

    from ui.i18n import CHINESE, DEFAULT, catalog, language

    cat = catalog()
    assert set(cat[DEFAULT]) == set(cat[CHINESE])
    fields = lambda text: sorted(f for _, f, _, _ in string.Formatter().parse(text) if f)  # noqa: E731
    for key, text in cat[DEFAULT].items():
        assert fields(text) == fields(cat[CHINESE][key]), key
    assert language("zh-CN,zh;q=0.9,en;q=0.8") == CHINESE and language("zh") == CHINESE
    assert language("en-US,en") == DEFAULT and language("zh-TW") == DEFAULT and language(None) == DEFAULT


def test_conversations_group_by_date_in_the_browsers_time_zone():
    from conversations.listing import date_group, grouped, page_size

    day = 86400
    now = 1_800_000_000  # 2027-01-15 08:00 UTC
    assert date_group(now - 60, now) == "today"
    assert date_group(now - day, now) == "yesterday"
    assert date_group(now - 5 * day, now) == "week" and date_group(now - 30 * day, now) == "older"
    assert date_group(now - 9 * 3600, now) == "yesterday"  # 23:00 the day before, in UTC
    assert date_group(now - 9 * 3600, now, utc_offset_minutes=120) == "today"  # 01:00 today, two hours east
    items = [SimpleNamespace(updated_at=t) for t in (now, now - day, now - 2 * day, now - 40 * day)]
    assert [(g, len(xs)) for g, xs in grouped(items, now)] == [
        ("today", 1),
        ("yesterday", 1),
        ("week", 1),
        ("older", 1),
    ]
    assert page_size(0) == page_size(1) == 50 and page_size(3) == 150


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


def test_the_enhance_controls_show_only_with_an_enhancer():
    import gradio as gr

    from qwen_image.backend import Capabilities
    from ui import chat, enhance

    spec = load_registry().get("tiny")
    for enhancer, shown in ((None, False), (object(), True)):
        ctx = SimpleNamespace(
            turns=SimpleNamespace(enhancer=enhancer),
            spec=spec,
            backend=SimpleNamespace(capabilities=Capabilities(spec.max_references, True, True)),
        )
        with gr.Blocks():
            tab = chat.layout(ctx)
            controls = enhance.layout(ctx, "gen")
        assert tab.enhance.visible is shown and tab.enhance_only.visible is shown
        assert tab.enhance.value is False  # off by default
        assert controls.rewrite.visible is shown  # the Generate tab's (its row, with the toggle, likewise)


def test_user_error_escapes_what_came_from_below_and_keeps_a_gr_error():
    import gradio as gr

    from qwen_image.generation import ValidationError
    from ui.context import user_error

    already = gr.Error("a &lt;b&gt; message")
    assert user_error(already) is already  # written for the page already: not escaped twice
    assert user_error(ValidationError("<b> is not a size.")).message == "&lt;b&gt; is not a size."
