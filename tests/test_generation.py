"""Validation of generation requests (qwen_image.generation.resolve): every error a user can cause, and defaults."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from qwen_image.generation import (
    MAX_PROMPT_TOKENS,
    SEED_MAX,
    GenerationRequest,
    ResolvedRequest,
    ValidationError,
    resolve,
)
from qwen_image.registry import load_registry

REG = load_registry()


def words(text: str) -> int:
    """A stand-in token counter: one token per word."""
    return len(text.split())


def img(w: int = 64, h: int = 64, color=(200, 30, 30)):
    return Image.new("RGB", (w, h), color)


def imgs(n: int) -> tuple:
    return tuple(img() for _ in range(n))


NAN = float("nan")
INF = float("inf")

# (id, model, request fields, message substring, field)
ERRORS = [
    # prompt text
    ("empty prompt", "tiny", dict(prompt=""), "Write a prompt", "prompt"),
    ("blank prompt", "tiny", dict(prompt="  \n\t "), "Write a prompt", "prompt"),
    ("prompt not text", "tiny", dict(prompt=None), "prompt must be text", "prompt"),
    ("prompt NUL", "tiny", dict(prompt="a red\x00 fox"), "control character (U+0000)", "prompt"),
    ("prompt escape", "tiny", dict(prompt="\x1b[31ma red fox"), "control character (U+001B)", "prompt"),
    ("prompt line separator", "tiny", dict(prompt="a red\u2028fox"), "control character (U+2028)", "prompt"),
    ("prompt too many chars", "tiny", dict(prompt="a" * 20_001), "20001 characters long; the limit is 20000", "prompt"),
    ("prompt too many tokens", "tiny", dict(prompt="fox " * 1001), "1001 tokens long; the limit is 1000", "prompt"),
    ("prompt tokens 20B", "tiny-qwen-image", dict(prompt="fox " * 1500), "1500 tokens long", "prompt"),
    # negative prompt text
    (
        "negative control char",
        "tiny-qwen-image",
        dict(prompt="a fox", negative_prompt="blurry\x07"),
        "negative prompt contains a control character (U+0007)",
        "negative prompt",
    ),
    (
        "negative too many tokens",
        "tiny-qwen-image",
        dict(prompt="a fox", negative_prompt="blurry " * 1001),
        "negative prompt is 1001 tokens long",
        "negative prompt",
    ),
    ("negative not text", "tiny-qwen-image", dict(prompt="a fox", negative_prompt=3), "must be text", None),
    # reference images
    ("11 references on tiny 2.1", "tiny", dict(prompt="mix", images=imgs(11)), "at most 10", "images"),
    ("11 references on 2.1", "qwen-image-2.1", dict(prompt="mix", images=imgs(11)), "at most 10", "images"),
    ("4 references on tiny 20B", "tiny-qwen-image", dict(prompt="mix", images=imgs(4)), "at most 3", "images"),
    ("4 references on 20B", "qwen-image", dict(prompt="mix", images=imgs(4)), "at most 3", "images"),
    (
        "empty reference",
        "tiny",
        dict(prompt="edit", images=(img(), Image.new("RGB", (0, 0)))),
        "image 2 is empty",
        "images",
    ),
    ("not an image", "tiny", dict(prompt="edit", images=("photo.png",)), "Reference image 1 is", "images"),
    ("images not a list", "tiny", dict(prompt="edit", images=img()), "list of images", "images"),
    ("<image2> missing", "tiny", dict(prompt="put <image2> on it", images=imgs(1)), "names <image2> but 1", "prompt"),
    ("<image1> without images", "tiny", dict(prompt="use <image1>"), "names <image1> but 0", "prompt"),
    ("<image0>", "tiny", dict(prompt="use <image0>", images=imgs(1)), "<image0>", "prompt"),
    # steps
    ("turbo with steps", "qwen-image-2.1-turbo", dict(prompt="a fox", steps=20), "fixed 8-step schedule", "steps"),
    ("steps 0", "tiny", dict(prompt="a fox", steps=0), "Steps must be between 1 and 100 (got 0)", "Steps"),
    ("steps 101", "tiny", dict(prompt="a fox", steps=101), "between 1 and 100 (got 101)", "Steps"),
    ("steps fraction", "tiny", dict(prompt="a fox", steps=2.5), "Steps must be a whole number", "Steps"),
    ("steps text", "tiny", dict(prompt="a fox", steps="10"), "Steps must be a whole number", "Steps"),
    ("steps bool", "tiny", dict(prompt="a fox", steps=True), "Steps must be a whole number", "Steps"),
    ("steps NaN", "tiny", dict(prompt="a fox", steps=NAN), "Steps must be a whole number", "Steps"),
    ("steps inf", "tiny", dict(prompt="a fox", steps=INF), "Steps must be a whole number", "Steps"),
    # CFG
    (
        "cfg without negative 2.1",
        "tiny",
        dict(prompt="a fox", true_cfg=4.0),
        "needs a negative prompt",
        "negative_prompt",
    ),
    (
        "cfg without negative real 2.1",
        "qwen-image-2.1",
        dict(prompt="a fox", true_cfg=2.5),
        "needs a negative prompt",
        "negative_prompt",
    ),
    (
        "negative with cfg 1",
        "tiny",
        dict(prompt="a fox", negative_prompt="blurry"),
        "only takes effect",
        "negative_prompt",
    ),
    (
        "negative with cfg 1 on 20B",
        "tiny-qwen-image",
        dict(prompt="a fox", negative_prompt="blurry", true_cfg=1),
        "only takes effect",
        "negative_prompt",
    ),
    ("cfg on turbo", "qwen-image-2.1-turbo", dict(prompt="a fox", true_cfg=3.0), "distilled", "true_cfg"),
    ("cfg on lightning", "qwen-image-lightning", dict(prompt="a fox", true_cfg=4.0), "distilled", "true_cfg"),
    (
        "cfg below 1",
        "tiny",
        dict(prompt="a fox", true_cfg=0.5),
        "True CFG must be between 1 and 20 (got 0.5)",
        "True CFG",
    ),
    ("cfg above 20", "tiny-qwen-image", dict(prompt="a fox", true_cfg=21), "between 1 and 20 (got 21)", "True CFG"),
    ("cfg text", "tiny", dict(prompt="a fox", true_cfg="4"), "True CFG must be a number", "True CFG"),
    ("cfg bool", "tiny", dict(prompt="a fox", true_cfg=True), "True CFG must be a number", "True CFG"),
    ("cfg NaN", "tiny-qwen-image", dict(prompt="a fox", true_cfg=NAN), "True CFG must be a number", "True CFG"),
    ("cfg inf", "tiny-qwen-image", dict(prompt="a fox", true_cfg=INF), "between 1 and 20", "True CFG"),
    # number of images and seed
    ("num_images 0", "tiny", dict(prompt="a fox", num_images=0), "Number of images must be between 1 and 4", None),
    ("num_images 5", "tiny", dict(prompt="a fox", num_images=5), "between 1 and 4 (got 5)", "Number of images"),
    ("num_images bool", "tiny", dict(prompt="a fox", num_images=True), "must be a whole number", "Number of images"),
    ("num_images None", "tiny", dict(prompt="a fox", num_images=None), "must be a whole number", "Number of images"),
    ("num_images NaN", "tiny", dict(prompt="a fox", num_images=NAN), "must be a whole number", "Number of images"),
    ("seed negative", "tiny", dict(prompt="a fox", seed=-1), "Seed must be between 0 and 4294967295 (got -1)", "Seed"),
    ("seed 2**32", "tiny", dict(prompt="a fox", seed=2**32), "got 4294967296", "Seed"),
    ("seed fraction", "tiny", dict(prompt="a fox", seed=1.5), "Seed must be a whole number", "Seed"),
    ("seed text", "tiny", dict(prompt="a fox", seed="42"), "Seed must be a whole number", "Seed"),
    ("seed bool", "tiny", dict(prompt="a fox", seed=False), "Seed must be a whole number", "Seed"),
    ("seed NaN", "tiny", dict(prompt="a fox", seed=NAN), "Seed must be a whole number", "Seed"),
    # transparency
    (
        "transparent on tiny 20B",
        "tiny-qwen-image",
        dict(prompt="a fox", transparent=True),
        "cannot make transparent",
        None,
    ),
    ("transparent on 20B", "qwen-image", dict(prompt="a fox", transparent=True), "use Qwen-Image-2.1", "transparent"),
    ("transparent not bool", "tiny", dict(prompt="a fox", transparent="yes"), "must be true or false", "transparent"),
    # red marks on the first reference
    ("marked without images", "tiny", dict(prompt="a fox", marked=True), "need a reference image", "marked"),
    ("marked not bool", "tiny", dict(prompt="a fox", images=(img(),), marked=1), "must be true or false", "marked"),
    # reference resolution
    ("reference res low", "tiny", dict(prompt="a fox", reference_resolution=16), "between 32 and 256 (got 16)", None),
    ("reference res high", "tiny", dict(prompt="a fox", reference_resolution=512), "between 32 and 256", None),
    (
        "reference res real",
        "qwen-image-2.1",
        dict(prompt="a fox", reference_resolution=4096),
        "between 256 and 2048",
        None,
    ),
    ("reference res real 20B", "qwen-image", dict(prompt="a", reference_resolution=128), "between 256 and 2048", None),
    (
        "reference res text",
        "tiny",
        dict(prompt="a fox", reference_resolution="64"),
        "Reference resolution must be",
        None,
    ),
    # sizes
    (
        "bad ratio",
        "tiny",
        dict(prompt="a fox", aspect_ratio="5:1"),
        "Aspect ratio '5:1' is not offered",
        "aspect_ratio",
    ),
    ("ratio not offered by 20B", "tiny-qwen-image", dict(prompt="a fox", aspect_ratio="21:9"), "not offered", None),
    ("malformed ratio", "qwen-image-2.1", dict(prompt="a fox", aspect_ratio="wide"), "choose one of 1:1", None),
    ("bad tier", "tiny", dict(prompt="a fox", tier="4K"), "Resolution '4K' is not offered", "tier"),
    ("only width", "tiny", dict(prompt="a fox", width=64), "Give both width and height", "size"),
    ("only height", "tiny", dict(prompt="a fox", height=64), "Give both width and height", "size"),
    ("width text", "tiny", dict(prompt="a fox", width="64", height=64), "Width must be a whole number", "Width"),
    ("height bool", "tiny", dict(prompt="a fox", width=64, height=True), "Height must be a whole number", "Height"),
    ("height NaN", "tiny", dict(prompt="a fox", width=64, height=NAN), "Height must be a whole number", "Height"),
    (
        "size too small",
        "qwen-image-2.1",
        dict(prompt="a", width=128, height=1024),
        "Size 128x1024 is out of range",
        "size",
    ),
    ("size too big", "qwen-image", dict(prompt="a fox", width=2560, height=1024), "out of range", "size"),
    ("size too many pixels", "qwen-image-2.1", dict(prompt="a", width=3072, height=3072), "too large", "size"),
    ("size too elongated", "qwen-image-2.1", dict(prompt="a", width=256, height=2304), "too elongated", "size"),
    (
        "match missing reference",
        "tiny",
        dict(prompt="edit", images=imgs(1), match_reference=2),
        "between 1 and 1",
        None,
    ),
    ("match without references", "tiny", dict(prompt="a fox", match_reference=1), "no reference image", None),
    ("match bool", "tiny", dict(prompt="edit", images=imgs(2), match_reference=True), "must be a whole number", None),
]


@pytest.mark.parametrize(("model", "fields", "message", "field"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_errors(model, fields, message, field):
    with pytest.raises(ValidationError) as info:
        resolve(GenerationRequest(**fields), REG.get(model), count_tokens=words)
    assert message in str(info.value)
    if field is not None:
        assert info.value.field == field
    # a message meant for a person: a full sentence, not a repr
    text = str(info.value)
    assert text.endswith(".") and "Error(" not in text and "\n" not in text


def test_validation_error_is_a_value_error():
    assert issubclass(ValidationError, ValueError)


def test_not_a_request():
    with pytest.raises(ValidationError, match="Not a generation request"):
        resolve({"prompt": "a fox"}, REG.get("tiny"))


def test_token_limit_with_the_real_tokenizer(engine21):
    prompt = "a red fox in the snow " * 200
    n = engine21.count_tokens(prompt.strip())
    assert n > MAX_PROMPT_TOKENS
    with pytest.raises(ValidationError) as info:
        resolve(GenerationRequest(prompt=prompt), engine21.spec, count_tokens=engine21.count_tokens)
    assert f"is {n} tokens long; the limit is {MAX_PROMPT_TOKENS}" in str(info.value)
    assert "nothing is cut off" in str(info.value)
    # the engine validates with the same counter
    with pytest.raises(ValidationError, match="tokens long"):
        engine21.resolve(GenerationRequest(prompt=prompt))
    # a prompt just under the limit passes
    short = "a red fox in the snow " * 20
    assert engine21.count_tokens(short) <= MAX_PROMPT_TOKENS
    assert engine21.resolve(GenerationRequest(prompt=short)).prompt == short.strip()


def test_token_limit_boundary():
    spec = REG.get("tiny")
    assert resolve(GenerationRequest(prompt="fox " * 1000), spec, count_tokens=words)
    # without a counter, only the character limit applies
    assert resolve(GenerationRequest(prompt="fox " * 4000), spec)


# -- happy paths ----------------------------------------------------------------------------------------------------
def test_defaults_for_tiny_21():
    r = resolve(GenerationRequest(prompt="  a red fox \n"), REG.get("tiny"), count_tokens=words)
    assert isinstance(r, ResolvedRequest)
    assert r.prompt == "a red fox"
    assert r.mode == "generate" and r.model == "tiny"
    assert (r.width, r.height) == (64, 64)  # 1K tier of the tiny table
    assert r.aspect_ratio == "1:1" and r.tier == "1K"
    assert r.steps == 4 and r.true_cfg == 1.0 and r.negative_prompt == "" and not r.uses_cfg
    assert r.num_images == 1 and r.transparent is False
    assert r.reference_resolution == 64 and r.sigmas is None


def test_seed_random_when_unset_and_recorded():
    spec = REG.get("tiny")
    r = resolve(GenerationRequest(prompt="a fox"), spec)
    assert isinstance(r.seed, int) and 0 <= r.seed <= SEED_MAX
    assert r.settings()["seed"] == r.seed and r.seeds == (r.seed,)
    seeds = {resolve(GenerationRequest(prompt="a fox"), spec).seed for _ in range(5)}
    assert len(seeds) > 1
    fixed = resolve(GenerationRequest(prompt="a fox"), spec, random_seed=lambda: 1234)
    assert fixed.seed == 1234 and fixed.settings()["seed"] == 1234
    # a float that is a whole number is accepted as a seed
    assert resolve(GenerationRequest(prompt="a fox", seed=7.0), spec).seed == 7


def test_seeds_per_image():
    spec = REG.get("tiny")
    r = resolve(GenerationRequest(prompt="a fox", seed=10, num_images=3), spec)
    assert r.seeds == (10, 11, 12)
    assert r.settings()["num_images"] == 3
    top = resolve(GenerationRequest(prompt="a fox", seed=SEED_MAX, num_images=2), spec)
    assert top.seeds == (SEED_MAX, 0)


@pytest.mark.parametrize("model", ["tiny-qwen-image", "qwen-image"])
def test_20b_default_negative_prompt_and_cfg(model):
    spec = REG.get(model)
    r = resolve(GenerationRequest(prompt="a fox"), spec)
    assert r.true_cfg == 4.0
    assert r.negative_prompt == " "
    assert r.uses_cfg
    # an empty negative prompt also means "the model's default"
    assert resolve(GenerationRequest(prompt="a fox", negative_prompt=""), spec).negative_prompt == " "
    own = resolve(GenerationRequest(prompt="a fox", negative_prompt="blurry", true_cfg=6), spec)
    assert own.negative_prompt == "blurry" and own.true_cfg == 6.0
    off = resolve(GenerationRequest(prompt="a fox", true_cfg=1), spec)
    assert off.negative_prompt == "" and not off.uses_cfg


def test_21_cfg_with_negative_prompt():
    r = resolve(GenerationRequest(prompt="a fox", negative_prompt="blurry", true_cfg=3), REG.get("tiny"))
    assert r.uses_cfg and r.negative_prompt == "blurry" and r.true_cfg == 3.0


def test_turbo_fixed_schedule():
    spec = REG.get("qwen-image-2.1-turbo")
    r = resolve(GenerationRequest(prompt="a fox"), spec)
    assert r.steps == 8 and r.sigmas == spec.sigmas and r.true_cfg == 1.0
    assert r.settings()["sigmas"] == list(spec.sigmas)


def test_edit_size_follows_the_first_reference():
    spec = REG.get("tiny")
    r = resolve(GenerationRequest(prompt="edit", images=(img(200, 100), img(100, 200))), spec)
    assert r.mode == "edit" and len(r.images) == 2
    assert r.aspect_ratio is None and r.tier == "1K"
    assert r.width % 32 == 0 and r.height % 32 == 0
    assert r.width > r.height
    assert r.settings()["references"] == 2
    # an explicit ratio wins over the reference
    square = resolve(GenerationRequest(prompt="edit", images=(img(200, 100),), aspect_ratio="1:1"), spec)
    assert (square.width, square.height) == (64, 64)


def test_match_reference():
    spec = REG.get("qwen-image-2.1")
    refs = (img(300, 100), img(100, 300))
    second = resolve(GenerationRequest(prompt="edit", images=refs, match_reference=2), spec)
    assert second.height > second.width
    assert abs(second.height / second.width - 3) < 0.1
    assert abs(second.width * second.height / 1024**2 - 1) < 0.05
    first = resolve(GenerationRequest(prompt="edit", images=refs, match_reference=1, tier="2K"), spec)
    assert first.width > first.height and first.tier == "2K"
    # ~2048^2 would make a 3:1 image 3547 px wide: it is shrunk to the model's 3072 px limit, keeping 3:1
    assert first.width == spec.max_side and abs(first.width / first.height - 3) < 0.05


def test_explicit_size_is_snapped():
    r = resolve(GenerationRequest(prompt="a fox", width=70, height=100), REG.get("tiny"))
    assert (r.width, r.height) == (64, 96)
    assert r.aspect_ratio is None and r.tier is None


def test_ratio_and_tier():
    spec = REG.get("tiny")
    r = resolve(GenerationRequest(prompt="a fox", aspect_ratio="16:9", tier="2K"), spec)
    assert (r.width, r.height) == dict(spec.sizes)["16:9"]
    assert r.aspect_ratio == "16:9" and r.tier == "2K"


def test_reference_resolution_snaps_to_32():
    r = resolve(GenerationRequest(prompt="a fox", reference_resolution=100), REG.get("tiny"))
    assert r.reference_resolution == 96


def test_transparent_on_21():
    r = resolve(GenerationRequest(prompt="a fox", transparent=True), REG.get("qwen-image-2.1"))
    assert r.transparent and r.settings()["transparent"] is True


def test_settings_are_plain_data():
    r = resolve(GenerationRequest(prompt="edit", images=imgs(2), seed=5), REG.get("tiny"))
    s = r.settings()
    assert s["references"] == 2 and "images" not in s
    for value in s.values():
        assert value is None or isinstance(value, (str, int, float, bool, list))
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())
