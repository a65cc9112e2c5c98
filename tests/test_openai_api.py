"""The OpenAI endpoint's request reading without a server, the API-key rule at start, and the remote progress line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qwen_image.backend import Progress
from qwen_image.registry import load_registry
from serving.openai_api import ApiError, build_request, parse_size, read_fields
from ui import render
from ui.i18n import CHINESE, DEFAULT, Tr
from ui.launch import api_key, byte_size, parse_args

SPEC = load_registry().get("qwen-image-2.1")


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as err:
        fn(*args)
    return err.value


def test_fields_map_onto_a_request():
    values = read_fields(
        {"prompt": "a fox", "size": "1024x768", "n": "2", "seed": 7, "guidance_scale": "4", "negative_prompt": "blur"},
        edit=False,
    )
    request, output = build_request(values, SPEC)
    assert (request.width, request.height, request.num_images, request.seed) == (1024, 768, 2, 7)
    assert request.true_cfg == 4.0 and request.negative_prompt == "blur" and output.format == "PNG"
    request, output = build_request(read_fields({"prompt": "x", "background": "transparent"}, False), SPEC)
    assert request.transparent and output.format == "PNG"
    assert build_request(read_fields({"prompt": "x", "model": "Qwen/Qwen-Image-2.1"}, False), SPEC)
    assert parse_size("auto") is None


@pytest.mark.parametrize(
    "fields, status, param",
    [
        ({"prompt": "x", "flavour": "vanilla"}, 400, "flavour"),  # unknown: refused, like OpenAI does
        ({"prompt": "x", "marked": True}, 400, "marked"),  # an edit-only field on a generation
        ({"prompt": "  "}, 400, "prompt"),
        ({"prompt": "x", "n": "two"}, 400, "n"),
        ({"prompt": "x", "seed": True}, 400, "seed"),  # a boolean is no number
        ({"prompt": "x", "true_cfg_scale": "strong"}, 400, "true_cfg_scale"),
        ({"prompt": "x", "quality": "hd"}, 400, "quality"),  # nothing this server cannot honour is ignored
        ({"prompt": "x", "response_format": "url"}, 400, "response_format"),
        ({"prompt": "x", "size": "1024"}, 400, "size"),
        ({"prompt": "x", "size": "64x64", "aspect_ratio": "1:1"}, 400, "aspect_ratio"),
        ({"prompt": "x", "background": "transparent", "output_format": "jpeg"}, 400, "output_format"),
        ({"prompt": "x", "true_cfg_scale": 4, "guidance_scale": 2}, 400, "guidance_scale"),
        ({"prompt": "x", "model": "dall-e-3"}, 404, "model"),
    ],
)
def test_bad_fields_are_refused_with_their_param(fields, status, param):
    err = refused(lambda: build_request(read_fields(fields, edit=False), SPEC))
    assert (err.status, err.param) == (status, param), err.message
    body = err.response().body
    assert b'"error"' in body and b'"message"' in body and b'"type"' in body


def test_the_api_needs_a_key_beyond_localhost(monkeypatch):
    monkeypatch.delenv("QIC_API_KEY", raising=False)
    assert api_key(parse_args(["--openai-api"])) is None  # local: no key needed
    for extra in (["--host", "0.0.0.0", "--public"], ["--share"]):
        with pytest.raises(SystemExit, match="without an API key"):
            api_key(parse_args(["--mcp", *extra]))
    assert api_key(parse_args(["--openai-api", "--host", "0.0.0.0", "--api-key", "k"])) == "k"
    assert api_key(parse_args(["--host", "0.0.0.0", "--public"])) is None  # no API served: nothing to protect
    assert byte_size("25mb") == 25 * 2**20 and byte_size("512") == 512


def test_remote_progress_is_elapsed_time_against_an_estimate():
    """The pending bubble of a remote job: elapsed time against the estimate, as text and as the meter, in both
    languages; past the estimate the meter is indeterminate; never a made-up step count."""
    running = Progress("remote", 0, 0, 12.0, 18.0, "gpu-1:8000")
    late = Progress("remote", 0, 0, 40.0, 0.0, "gpu-1:8000")
    snap = SimpleNamespace(state="running", position=0, progress=running)
    assert render.progress_text(snap, Tr(DEFAULT)) == "Generating on gpu-1:8000 · 12 s, about 18 s left"
    assert render.progress_text(snap, Tr(CHINESE)) == "正在 gpu-1:8000 上生成 · 已用 12 秒，大约还需 18 秒"
    assert "taking longer than estimated" in render.progress_text(
        SimpleNamespace(state="running", position=0, progress=late), Tr(DEFAULT)
    )
    assert render.progress_meter(running) == (0.4, 1) and render.progress_meter(late) is None
    retrying = SimpleNamespace(state="running", position=0, progress=Progress("retrying", message="gpu-1:8000"))
    assert render.progress_text(retrying, Tr(DEFAULT)) == "gpu-1:8000 failed; trying another image server…"

    turn = SimpleNamespace(id="t1", settings={"width": 64, "height": 48}, version=1, versions=1)
    bubble = render.pending_html(turn, 1, snap, Tr(DEFAULT))
    assert '<progress value="0.4" max="1"' in bubble and "about 18 s left" in bubble and "Step" not in bubble
    bubble = render.pending_html(turn, 1, SimpleNamespace(state="running", position=0, progress=late), Tr(DEFAULT))
    assert '<progress max="1"' in bubble
