"""Messages from below the UI in the Chinese page (ui/errors.py; strings.toml [messages] and [terms]).

Completeness: every message the real validators give for the table of bad requests (tests/test_generation.py) and
the bad-image corpus (tests/test_images.py), and every message written in the engine, conversations and image-server
code (found in their source), has a Chinese translation; a new message without one fails here. Then the places that
show them: the toast wrappers, failed and pending bubbles, a job's end, the enhancer's one line.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image
from test_generation import ERRORS, REG, words
from test_images import CASES

from conversations import archive, faults, store_schema, turns
from conversations.jobs import JobSnapshot
from conversations.rewrites import FAILED
from qwen_image import images
from qwen_image.enhance.base import Enhancement, unchanged_note
from qwen_image.generation import GenerationRequest, ValidationError, resolve
from qwen_image.images import ImageInputError, open_image
from serving import pool
from ui import render
from ui.chat import toasts, toasts_each
from ui.context import user_error
from ui.errors import Translator, compile_template
from ui.i18n import CHINESE, DEFAULT, Tr, catalog, message

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u3400-\u9fff]")
ZH = SimpleNamespace(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})  # what lang_of reads of a gr.Request
EN = SimpleNamespace(headers={"accept-language": "en-US,en;q=0.9"})


def untranslated(messages) -> list[str]:
    """The messages that do not come out in Chinese (unchanged, or without a Chinese character)."""
    out = []
    for m in dict.fromkeys(messages):
        zh = message(CHINESE, m)
        if zh == m or not CJK.search(zh):
            out.append(m)
    return out


def raised(fn, *args, **kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# -- the matcher ------------------------------------------------------------------------------------------------------


def test_english_and_unknown_messages_pass_through():
    assert message(DEFAULT, "Write a prompt first.") == "Write a prompt first."
    assert message(CHINESE, "Write a prompt first.") == "请先输入提示词。"
    for unknown in ("KeyError: 'x'", "Something nobody wrote down.", "", "已经是中文。", "x" * 10_000):
        assert message(CHINESE, unknown) == unknown  # never lost
    assert message(CHINESE, None) is None


def test_fields_are_matched_as_text_and_translated_when_known():
    zh = message(CHINESE, "attachment 2: not an image, or not a format we read (PNG, JPEG, WebP, BMP, GIF or TIFF).")
    assert zh == "第 2 张添加的图片：不是图片，或不是可以读取的格式（PNG、JPEG、WebP、BMP、GIF 或 TIFF）。"
    assert message(CHINESE, "holiday.jpg: the file is empty (0 bytes).") == "holiday.jpg：文件是空的（0 字节）。"
    assert message(CHINESE, "Steps must be between 1 and 100 (got 0).") == "步数必须在 1 到 100 之间（当前为 0）。"
    # a message inside a message, also one that lost its full stop
    tokens = "The prompt is 1200 tokens long; the limit is 1000. Shorten it by about 200 tokens (nothing is cut off "
    tokens += "silently)."
    note = unchanged_note(f"the rewrite was not usable: {tokens}")
    assert message(CHINESE, note).startswith("提示词未优化（改写结果不可用：提示词有 1200 个 token")
    # sentence by sentence (the image servers' failover), and lists of known terms
    two = "Image server a failed (HTTP 502). Image server b failed (timed out). Nothing was made; try again later."
    assert (
        message(CHINESE, two)
        == "图像服务器 a 出错（HTTP 502）。图像服务器 b 出错（timed out）。没有生成任何图片；请稍后重试。"
    )
    half = "Image server a failed (HTTP 502). A sentence nobody wrote down."
    assert message(CHINESE, half) == "图像服务器 a 出错（HTTP 502）。A sentence nobody wrote down."
    oom = "Ran out of GPU memory; retried with VAE tiling on, VAE slicing on, the prefix KV cache off."
    assert message(CHINESE, oom) == "GPU 显存不足；已开启 VAE 分块、开启 VAE 切片、关闭前缀 KV 缓存后重试。"
    # the most specific template wins; an unknown item leaves a list as it is
    odd = "Ran out of GPU memory; retried with VAE tiling on, magic."
    assert message(CHINESE, odd) == "GPU 显存不足；已VAE tiling on, magic后重试。"


def test_templates_are_checked():
    with pytest.raises(ValueError, match="no text of its own"):
        compile_template("{what}", "{what}")
    with pytest.raises(ValueError, match="same fields"):
        compile_template("Seed {n} is bad.", "种子无效。")
    t = Translator([("Give {a} and {a}.", "给 {a}。")])
    assert t("Give x and x.") == "给 x。" and t("Give x and y.") == "Give x and y."  # a repeated field is one value
    for key, text in catalog()[DEFAULT].items():
        if key.startswith(("messages.", "terms.")):
            compile_template(text, catalog()[CHINESE][key])


# -- completeness -----------------------------------------------------------------------------------------------------


def test_every_validation_message_of_the_bad_request_table_is_chinese():
    said = [
        raised(resolve, GenerationRequest(**fields), REG.get(model), count_tokens=words)
        for _, model, fields, *_ in ERRORS
    ]
    tiny = REG.get("tiny")
    said += [
        raised(resolve, "a fox", tiny),
        raised(resolve, GenerationRequest("a fox", original_prompt="a\x00fox"), tiny),
        raised(resolve, GenerationRequest("a fox", original_prompt="a fox!", enhancer=7), tiny),
        raised(resolve, GenerationRequest("a fox", seed=10**40), tiny),
        raised(resolve, GenerationRequest("a fox", width=64, height=64, tier="4K"), tiny),
    ]
    assert len(said) == len(ERRORS) + 5
    assert not untranslated(said)


def test_every_message_of_the_bad_image_corpus_is_chinese(tmp_path, monkeypatch):
    bad = [c for c in CASES if c.error]
    said = []
    for case in bad:
        data = case.make()
        said.append(raised(open_image, data))  # "upload: ..."
        said.append(raised(open_image, data, name="attachment 3"))  # as the chat names them
        path = tmp_path / f"{case.id}{case.suffix}"
        path.write_bytes(data)
        said.append(raised(open_image, path))  # the file's name
    folder = tmp_path / "a folder"
    folder.mkdir()
    said += [
        raised(open_image, tmp_path / "missing.png"),
        raised(open_image, folder),
        raised(open_image, "bad\0name.png"),
        raised(open_image, 42),
        raised(open_image, Image.new("RGB", (1, 2000))),
        raised(open_image, Image.new("RGB", (5, 5))),
        images._bomb_message("attachment 1", Exception("Image size (99000000 pixels) exceeds limit")),
        images._bomb_message("attachment 1", Exception("no size given")),
    ]
    text = tmp_path / "t.png"
    text.write_text("hello")
    with text.open("r") as f:
        said.append(raised(open_image, f))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 16)
    said.append(raised(open_image, b"\x89PNG" + b"\0" * 64))
    assert not untranslated(said)


# Calls that carry a message for the user, and which of their arguments it is.
MESSAGE_CALLS = {
    "ValidationError": 0, "ImageInputError": 0, "Busy": 0, "Unavailable": 0, "EngineError": 0, "BackendError": 0,
    "EnhancerError": 0, "_problem": 0, "_expect": 1, "unchanged_note": 0, "failed": 0, "_finish": 2,
}  # fmt: skip
MESSAGE_KWARGS = {"_update": "error", "_end": "error"}
SAMPLES = {"_failures": "Image server gpu-1 failed (HTTP 502)."}  # helpers whose text is itself a message
SOURCES = ("qwen_image/generation.py", "qwen_image/images.py", "qwen_image/engine.py", "qwen_image/enhance",
           "conversations", "serving/pool.py")  # fmt: skip


def _render(node, local: dict) -> str | None:
    """The text of a message expression, its variable parts filled with a sample; None when it is not text."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(_render(v, local) or "7" for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _render(node.value, local) or "7"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _render(node.left, local), _render(node.right, local)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Name) and node.id in local:
        return _render(local[node.id], local)
    if isinstance(node, ast.Call):
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        return SAMPLES.get(name)
    return None


def written_messages() -> list[tuple[str, int, str]]:
    """(file, line, message with samples) for every message written in the code below the UI."""
    found = []
    paths = [p for s in SOURCES for p in ([ROOT / s] if s.endswith(".py") else sorted((ROOT / s).rglob("*.py")))]
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            local = {  # where = f"turn {n}": a name that holds a piece of a message
                n.targets[0].id: n.value
                for n in ast.walk(func)
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, (ast.Constant, ast.JoinedStr))
            }  # fmt: skip
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                args = []
                if name in MESSAGE_CALLS and len(call.args) > MESSAGE_CALLS[name]:
                    args.append(call.args[MESSAGE_CALLS[name]])
                args += [k.value for k in call.keywords if k.arg == MESSAGE_KWARGS.get(name)]
                for arg in args:
                    text = _render(arg, local)
                    if text is not None and re.search(r"[A-Za-z]{2}", re.sub(r"\b7\b", "", text)):
                        found.append((str(path.relative_to(ROOT)), call.lineno, text))
    return found


def test_every_message_written_below_the_ui_is_chinese():
    found = written_messages()
    assert len(found) > 100  # the search sees them (a broken search must not pass as "nothing to translate")
    missing = [f"{file}:{line}: {text}" for file, line, text in found if untranslated([text])]
    assert not missing, "no Chinese in ui/strings.toml [messages] for:\n" + "\n".join(missing)


def test_conversation_storage_and_server_messages_are_chinese():
    said = [turns.STILL_RUNNING, turns.BUSY_HERE, store_schema.INTERRUPTED, archive._EXPORT_INTERRUPTED]
    said += [str(faults.StorageError(kind)) for kind in faults.REASONS]
    said += [f"The image could not be saved: {reason}." for reason in faults.REASONS.values()]
    said += [f"The image servers (Qwen Image Chat) cannot {what}." for what in pool._CANNOT.values()]
    said += ["The image servers (ComfyUI) cannot take the setting 'marked'."]
    said += [
        unchanged_note(r) for r in ("no prompt enhancer is configured", "the enhancer at h:1 did not answer in time")
    ]
    said += ["Ran out of GPU memory; retried with VAE tiling on, VAE slicing on, the prefix KV cache off."]
    said += [str(user_error(RuntimeError("disk on fire")).message)]
    assert not untranslated(said)


def test_a_real_archive_problem_is_chinese(tmp_path):
    bad = tmp_path / "bad.zip"
    with __import__("zipfile").ZipFile(bad, "w") as zf:
        zf.writestr("conversation.json", '{"format": "something else"}')
    with pytest.raises(ValidationError) as info:
        archive.import_conversation(None, "owner", bad)
    assert message(CHINESE, str(info.value)) == "无法导入这个对话压缩包：它不是 Qwen Image Chat 导出的对话。"


# -- where the page shows them ----------------------------------------------------------------------------------------


@pytest.fixture
def toasts_seen(monkeypatch):
    seen = []
    monkeypatch.setattr(gr, "Warning", lambda text, **kw: seen.append(("warning", text)))
    monkeypatch.setattr(gr, "Info", lambda text, **kw: seen.append(("info", text)))
    return seen


def test_toast_wrappers_speak_the_pages_language(toasts_seen):
    def refused(value, request=None):  # Gradio passes the request by position
        raise ValidationError("Write a prompt first.")

    def wrapped_error(value, request=None):  # the Generate/Edit tabs: user_error's escaped gr.Error
        raise user_error(ImageInputError("attachment 1: the file was opened as text; open it in binary mode ('rb')."))

    def generator(value, request=None):
        yield 1
        raise ValidationError("The server is busy (3 jobs waiting). Try again in a minute.")

    assert toasts(refused)("x", ZH) == gr.skip() and toasts(refused)("x", EN) == gr.skip()  # nothing else changes
    toasts(wrapped_error)("x", request=ZH)
    assert list(toasts_each(generator)("x", ZH)) == [1]
    toasts(refused)("x")  # no request: English
    assert toasts_seen == [
        ("warning", "请先输入提示词。"),
        ("warning", "Write a prompt first."),
        ("warning", "第 1 张添加的图片：文件是以文本模式打开的；请用二进制模式（&#x27;rb&#x27;）打开。"),
        ("warning", "服务器繁忙（有 3 个任务在排队）。请一分钟后再试。"),
        ("warning", "Write a prompt first."),
    ]
    toasts_seen.clear()
    toasts(wrapped_error)("x", EN)  # English stays exactly as it was (escaped once)
    english = "attachment 1: the file was opened as text; open it in binary mode ('rb')."
    assert toasts_seen == [("warning", html.escape(english))]


def _failed_turn(error: str, status: str = "failed"):
    return SimpleNamespace(id="t1", prompt="a fox", inputs=(), outputs=(), status=status, error=error, settings={},
                           timings={}, versions=1, version=1)  # fmt: skip


LINKS = render.Links(lambda rec: f"/p/{rec.id}.webp", lambda rec, prompt: (f"/d/{rec.id}.png", "x.png"))


def test_a_failed_bubble_shows_its_stored_english_error_in_chinese():
    stored = str(faults.StorageError("full"))  # as the store keeps it: English
    zh = render.result_message(_failed_turn(stored), 2, LINKS, Tr(CHINESE))["content"]
    assert "失败：没有保存任何内容：存放数据文件夹的磁盘已满" in zh
    en = render.result_message(_failed_turn(stored), 2, LINKS, Tr(DEFAULT))["content"]
    assert "Failed: Nothing was saved: the disk that holds the data folder is full" in en
    unknown = render.result_message(_failed_turn("<b>RuntimeError</b>: boom"), 2, LINKS, Tr(CHINESE))["content"]
    assert "失败：&lt;b&gt;RuntimeError&lt;/b&gt;: boom" in unknown  # as it is, and escaped
    interrupted = render.result_message(_failed_turn(store_schema.INTERRUPTED), 2, LINKS, Tr(CHINESE))["content"]
    assert "已中断：服务器在任务进行中停止了" in interrupted


def test_a_pending_bubble_and_a_jobs_end_show_their_notes_in_chinese(toasts_seen):
    from ui.progress import outcome

    note = unchanged_note("no prompt enhancer is configured")
    live = JobSnapshot("j", "o", "c", "t1", "running", notes=(note,))
    pending = render.pending_html(_failed_turn("", "running"), 1, live, Tr(CHINESE))
    assert "提示词未优化（没有配置提示词优化器）；已按原样使用。" in pending
    moved = "Image server a failed (HTTP 502). The image was made on b instead."
    done = JobSnapshot("j", "o", "c", "t1", "done", notes=(moved,))
    assert outcome(done, Tr(CHINESE)) == "图像服务器 a 出错（HTTP 502）。图片改由 b 生成。"
    oom = "Out of GPU memory while decoding, even tiled. Try a smaller size."
    failed = JobSnapshot("j", "o", "c", "t1", "failed", error=oom)
    assert outcome(failed, Tr(CHINESE)).startswith("⚠️ 解码时 GPU 显存不足")
    assert outcome(JobSnapshot("j", "o", "c", "t1", "failed"), Tr(CHINESE)) == "⚠️ 任务失败"
    assert toasts_seen == [
        ("info", "图像服务器 a 出错（HTTP 502）。图片改由 b 生成。"),
        ("warning", "解码时 GPU 显存不足（即使已分块）。请尝试更小的尺寸。"),
        ("warning", "任务失败"),
    ]


def test_a_failed_rewrite_in_the_chat_is_a_chinese_toast(toasts_seen):
    from ui.chat import ChatHandlers, Page

    rewrite = SimpleNamespace(id="r1", state=FAILED, error="Something went wrong: boom", prompt="a fox", job_id=None)
    rewrites = SimpleNamespace(active=lambda owner: [], get=lambda owner, rid: rewrite)
    ctx = SimpleNamespace(jobs=SimpleNamespace(active=lambda owner: []), turns=SimpleNamespace(rewrites=rewrites))
    tab = SimpleNamespace(msg="msg", timer="timer")
    chat = ChatHandlers(ctx, tab, None)
    chat.view = lambda page: {"msg": {}}
    page = Page("o", "c", None, "", 1, 0, {"rewrites": ["r1"]}, Tr(CHINESE))
    out = chat.tick(page)
    assert toasts_seen == [("warning", "出错了：boom")] and out["msg"]["value"]["text"] == "a fox"


def test_the_enhancers_one_line_is_chinese():
    from ui.enhance import enhance_only

    note = unchanged_note("the enhancer at gpu-box:8000 answered HTTP 503")
    result = Enhancement("a fox", "a fox", "endpoint", note=note)
    turns_ = SimpleNamespace(enhancer=object(), enhance=lambda *a, **k: result)
    ctx = SimpleNamespace(turns=turns_, owner=lambda state, request: "o")
    *_, (prompt, line) = enhance_only(ctx, None, ZH, Tr(CHINESE), None)
    assert prompt == "a fox" and line == render.escape_md(
        "提示词未优化（gpu-box:8000 上的优化器返回了 HTTP 503）；已按原样使用。"
    )


def test_messages_stay_out_of_the_browsers_catalogue():
    from ui.i18n import i18n

    shown = i18n().translations["zh-CN"]
    assert "tab.chat" in shown and not any(k.startswith(("messages.", "terms.")) for k in shown)
