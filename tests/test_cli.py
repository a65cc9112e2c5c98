"""The headless command line (in-process) and the settings it writes into PNGs."""

from __future__ import annotations

import json
import threading

import pytest
from PIL import Image

from qwen_image.cli import main
from qwen_image.metadata import JSON_KEY, parameters_text, parse_parameters, read_settings

SETTING_KEYS = {
    "model",
    "mode",
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "aspect_ratio",
    "tier",
    "steps",
    "true_cfg",
    "seed",
    "num_images",
    "transparent",
    "reference_resolution",
    "references",
    "sigmas",
    "image_index",
    "app",
    "format",
}


def _join_loaders() -> None:
    """A command that fails validation returns while its engine still loads in the background; let that finish, so
    that it never overlaps the next load in this process (from_pretrained is not safe to run in two threads)."""
    for thread in threading.enumerate():
        if thread.name == "engine-load":
            thread.join(timeout=120)


def cli(argv) -> int:
    try:
        return main([str(a) for a in argv])
    finally:
        _join_loaders()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def settings_of(path) -> tuple[dict, str, Image.Image]:
    image = Image.open(path)
    image.load()
    return json.loads(image.info[JSON_KEY]), image.info["parameters"], image


@pytest.fixture(scope="module")
def fox_png(tmp_path_factory):
    """A tiny-model PNG made by `generate`, shared by the tests below."""
    path = tmp_path_factory.mktemp("cli") / "fox.png"
    assert cli(["generate", "--model", "tiny", "--prompt", "a red fox", "--seed", "42", "--out", path]) == 0
    return path


def test_generate_writes_png_with_settings(fox_png):
    data, params, image = settings_of(fox_png)
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
    # A1111 parameters: the prompt line, then key: value pairs
    lines = params.splitlines()
    assert lines[0] == "a red fox"
    assert len(lines) == 2  # no negative prompt line without CFG
    for part in ("Steps: 4", "Seed: 42", "Size: 64x64", "Model: tiny", "Mode: generate", "CFG scale: 1.0"):
        assert part in lines[-1]
    # the JSON chunk has every setting
    assert set(data) >= SETTING_KEYS
    assert data["seed"] == 42 and data["model"] == "tiny" and data["prompt"] == "a red fox"
    assert (data["width"], data["height"], data["steps"], data["mode"]) == (64, 64, 4, "generate")
    assert data["image_index"] == 0 and data["app"] == "qwen-image-chat"
    assert read_settings(image) == data
    # the A1111 text alone carries the main settings too
    parsed = parse_parameters(params)
    assert parsed["prompt"] == "a red fox" and parsed["seed"] == 42 and parsed["steps"] == 4
    assert (parsed["width"], parsed["height"], parsed["model"]) == (64, 64, "tiny")


def test_generate_prints_path_and_seed(tmp_path, capsys):
    out = tmp_path / "sub" / "x.png"
    code, stdout, stderr = run(capsys, "generate", "--model", "tiny", "--prompt", "a boat", "--seed", 5, "--out", out)
    assert code == 0 and out.is_file()
    assert f"{out}  seed 5  64x64 RGB" in stdout
    assert "random weights" in stderr


@pytest.mark.parametrize("model", ["tiny", "tiny-qwen-image"])
def test_edit_with_the_generated_png(fox_png, tmp_path, capsys, model):
    out = tmp_path / "edit.png"
    code, _, stderr = run(
        capsys, "edit", "--model", model, "--image", fox_png, "--prompt", "make it blue", "--seed", 9, "--out", out
    )
    assert code == 0, stderr
    data, params, image = settings_of(out)
    assert data["mode"] == "edit" and data["references"] == 1 and data["model"] == model and data["seed"] == 9
    assert image.mode == "RGB" and image.size == (data["width"], data["height"])
    assert data["width"] == data["height"]  # follows the square reference
    assert "Mode: edit" in params and "References: 1" in params and f"Model: {model}" in params
    assert read_settings(image) == data
    if model == "tiny-qwen-image":
        assert data["true_cfg"] == 4.0 and data["negative_prompt"] == " "
        assert "CFG scale: 4.0" in params


def test_transparent_keeps_alpha(tmp_path, capsys):
    out = tmp_path / "glass.png"
    code, stdout, _ = run(
        capsys, "generate", "--model", "tiny", "--prompt", "a glass", "--seed", 1, "--transparent", "--out", out
    )
    assert code == 0
    data, params, image = settings_of(out)
    assert image.mode == "RGBA" and "RGBA" in stdout
    assert image.getchannel("A").getextrema()[0] < 255
    assert data["transparent"] is True and "Transparent: true" in params


def test_num_images_writes_numbered_files(tmp_path, capsys):
    out = tmp_path / "batch.png"
    code, stdout, _ = run(
        capsys, "generate", "--model", "tiny", "--prompt", "a kite", "--seed", 7, "--num-images", 2, "--out", out
    )
    assert code == 0
    assert not out.exists()
    for i, seed in ((1, 7), (2, 8)):
        path = tmp_path / f"batch-{i}.png"
        data, params, _ = settings_of(path)
        assert data["seed"] == seed and data["image_index"] == i - 1 and data["num_images"] == 2
        assert f"Seed: {seed}," in params
        assert f"{path}  seed {seed}" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--model", "tiny", "--prompt", "x", "--steps", "0"], "Steps must be between 1 and 100"),
        (["generate", "--model", "tiny", "--prompt", "   "], "Write a prompt"),
        (["generate", "--model", "tiny-qwen-image", "--prompt", "x", "--transparent"], "cannot make transparent"),
        (["generate", "--model", "tiny", "--prompt", "x", "--width", "64"], "Give both width and height"),
        (["generate", "--model", "tiny", "--prompt", "x", "--negative-prompt", "blurry"], "only takes effect"),
        (["edit", "--model", "tiny", "--prompt", "x", "--image", "/no/such/file.png"], "does not exist"),
    ],
)
def test_validation_error_exit_code(tmp_path, capsys, argv, message):
    out = tmp_path / "never.png"
    code, _, stderr = run(capsys, *argv, "--out", out)
    assert code == 2
    assert "error:" in stderr and message in stderr
    assert not out.exists()


def test_parse_parameters_a1111():
    text = (
        "a photo of a cat, masterpiece\n"
        "wearing a hat\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 123456, Size: 512x768, Model hash: abc123, "
        'Model: sd15, Lora hashes: "detail: 7c6, more: 1b2", Clip skip: 2'
    )
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "a photo of a cat, masterpiece\nwearing a hat"
    assert parsed["negative_prompt"] == "blurry, lowres"
    assert (parsed["steps"], parsed["true_cfg"], parsed["seed"]) == (30, 7.5, 123456)
    assert (parsed["width"], parsed["height"], parsed["model"]) == (512, 768, "sd15")
    assert parsed["extra"] == {
        "Sampler": "DPM++ 2M Karras",
        "Model hash": "abc123",
        "Lora hashes": "detail: 7c6, more: 1b2",
        "Clip skip": "2",
    }


def test_parameters_text_round_trip_with_negative_prompt():
    settings = {
        "prompt": "a lighthouse\nat dusk",
        "negative_prompt": "blurry",
        "steps": 50,
        "true_cfg": 4.0,
        "seed": 77,
        "width": 1328,
        "height": 1328,
        "model": "qwen-image",
        "mode": "edit",
        "references": 2,
        "reference_resolution": 1024,
        "transparent": False,
    }
    parsed = parse_parameters(parameters_text(settings))
    for key, value in settings.items():
        if key != "transparent":
            assert parsed[key] == value, key
    assert "transparent" not in parsed


def test_read_settings_without_metadata():
    assert read_settings(Image.new("RGB", (4, 4))) is None
    image = Image.new("RGB", (4, 4))
    image.info["parameters"] = "a dog\nSteps: 20, Seed: 3, Size: 4x4"
    assert read_settings(image)["seed"] == 3
    image.info[JSON_KEY] = "{not json"
    assert read_settings(image)["prompt"] == "a dog"


def test_generate_with_enhance_records_both_prompts(tmp_path, capsys):
    out = tmp_path / "enhanced.png"
    code, _, stderr = run(
        capsys, "generate", "--model", "tiny", "--prompt", "a red fox", "--seed", 3, "--enhance", "--out", out
    )
    assert code == 0 and "enhanced prompt:" in stderr, stderr
    data, params, _ = settings_of(out)
    assert data["original_prompt"] == "a red fox" and data["prompt"] != "a red fox"
    assert "text encoder" in data["enhancer"]
    assert params.startswith(data["prompt"])  # A1111 parameters: the prompt that was drawn


def test_enhance_with_an_endpoint_that_is_down_still_makes_the_image(tmp_path, capsys):
    out = tmp_path / "plain.png"
    code, _, stderr = run(
        capsys, "edit", "--model", "tiny", "--image", _square(tmp_path), "--prompt", "make it blue", "--enhance",
        "--enhancer-url", "http://127.0.0.1:9/v1", "--enhancer-timeout", 5, "--out", out,
    )  # fmt: skip
    assert code == 0 and "Prompt not enhanced (could not reach the enhancer" in stderr
    data, _, _ = settings_of(out)
    assert data["prompt"] == "make it blue" and "original_prompt" not in data


def _square(tmp_path):
    path = tmp_path / "square.png"
    Image.new("RGB", (64, 64), "red").save(path)
    return path
