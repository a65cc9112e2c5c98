"""The model registry (configs/models.toml), model resolution and output sizes."""

from __future__ import annotations

import math

import pytest

from qwen_image import sizes
from qwen_image.registry import FAMILIES, load_registry, resolve_model

REG = load_registry()
SPEC21 = REG.get("qwen-image-2.1")
SPEC20 = REG.get("qwen-image")


# -- registry -------------------------------------------------------------------------------------------------------
def test_registry_loads_every_model():
    assert {
        "qwen-image-2.1",
        "qwen-image-2.1-turbo",
        "qwen-image",
        "qwen-image-lightning",
        "tiny",
        "tiny-qwen-image",
    } <= set(REG.models)
    for key, spec in REG.models.items():
        assert spec.key == key
        assert spec.family in FAMILIES
        assert spec.default_tier in spec.tier_names and spec.native_tier in spec.tier_names
        assert spec.ratios and "1:1" in spec.ratios
        assert spec.min_side < spec.max_side
        assert spec.max_references >= 1
        # 2.1 generates and edits with one pipeline; the 20B family uses two
        assert spec.one_pipeline == (spec.family == "qwen-image-2.1")
        if spec.sigmas:
            assert spec.steps == len(spec.sigmas) and not spec.allow_cfg
    assert REG.default_gpu == "qwen-image-2.1" and REG.default_cpu == "tiny"


def test_registry_unknown_key_lists_models():
    with pytest.raises(KeyError, match="known models"):
        REG.get("no-such-model")


def test_resolve_auto_depends_on_cuda():
    assert resolve_model("auto", cuda=False).key == "tiny"
    assert resolve_model("auto", cuda=True).key == "qwen-image-2.1"


@pytest.mark.parametrize(
    ("family", "key"), [("qwen-image-2.1", "tiny"), ("qwen-image", "tiny-qwen-image"), (None, "tiny")]
)
def test_resolve_tiny_with_family(family, key):
    spec = resolve_model("tiny", family=family)
    assert spec.key == key and spec.tiny
    assert family is None or spec.family == family


def test_resolve_registry_name_and_family_mismatch():
    assert resolve_model("qwen-image").family == "qwen-image"
    with pytest.raises(ValueError, match="is of family"):
        resolve_model("qwen-image", family="qwen-image-2.1")


def test_resolve_unknown_name_needs_family():
    with pytest.raises(ValueError, match="--family"):
        resolve_model("someone/some-model")
    with pytest.raises(ValueError, match="unknown family"):
        resolve_model("someone/some-model", family="sdxl")


def test_resolve_folder_with_family_21(tmp_path):
    spec = resolve_model(str(tmp_path), family="qwen-image-2.1")
    assert spec.family == "qwen-image-2.1"
    assert spec.generate_checkpoint == spec.edit_checkpoint == str(tmp_path)
    assert not spec.tiny
    assert str(tmp_path) in spec.key and str(tmp_path) in spec.label
    # settings come from the family's main model
    assert spec.steps == SPEC21.steps and spec.sizes == SPEC21.sizes


def test_resolve_folder_with_family_20b(tmp_path):
    plain = resolve_model(str(tmp_path), family="qwen-image")
    assert plain.generate_checkpoint == plain.edit_checkpoint == str(tmp_path)
    (tmp_path / "generate").mkdir()
    (tmp_path / "edit").mkdir()
    split = resolve_model(str(tmp_path), family="qwen-image")
    assert split.generate_checkpoint == str(tmp_path / "generate")
    assert split.edit_checkpoint == str(tmp_path / "edit")
    assert split.generate_pipeline == "QwenImagePipeline" and split.edit_pipeline == "QwenImageEditPlusPipeline"
    assert split.true_cfg == SPEC20.true_cfg


# -- sizes ----------------------------------------------------------------------------------------------------------
NATIVE21 = {
    "1:1": (2048, 2048),
    "4:3": (2400, 1792),
    "3:4": (1792, 2400),
    "3:2": (2528, 1696),
    "2:3": (1696, 2528),
    "16:9": (2752, 1536),
    "9:16": (1536, 2752),
}
NATIVE20 = {
    "1:1": (1328, 1328),
    "16:9": (1664, 928),
    "9:16": (928, 1664),
    "4:3": (1472, 1140),
    "3:4": (1140, 1472),
    "3:2": (1584, 1056),
    "2:3": (1056, 1584),
}


@pytest.mark.parametrize(("spec", "table"), [(SPEC21, NATIVE21), (SPEC20, NATIVE20)], ids=["2.1", "20B"])
def test_native_tier_uses_the_published_table(spec, table):
    for ratio, (w, h) in table.items():
        # the published 1472x1140 is not a multiple of 16; the pipeline renders (and we record) 1472x1136
        expected = (w // spec.multiple_of * spec.multiple_of, h // spec.multiple_of * spec.multiple_of)
        assert sizes.size_for(spec, ratio, spec.native_tier) == expected


@pytest.mark.parametrize(("spec", "multiple"), [(SPEC21, 32), (SPEC20, 16)], ids=["2.1", "20B"])
def test_1k_tier_keeps_ratio_at_a_megapixel(spec, multiple):
    assert spec.multiple_of == multiple
    for ratio in spec.ratios:
        w, h = sizes.size_for(spec, ratio, "1K")
        assert w % multiple == 0 and h % multiple == 0, (ratio, w, h)
        assert abs(w * h / 1024**2 - 1) < 0.05, (ratio, w, h)
        nw, nh = dict(spec.sizes)[ratio]
        assert abs(math.log((w / h) / (nw / nh))) < 0.05, (ratio, w, h)
    assert sizes.size_for(spec, "1:1", "1K") == (1024, 1024)


def test_size_for_rejects_unknown_ratio_and_tier():
    with pytest.raises(ValueError, match="aspect ratio 5:1"):
        sizes.size_for(SPEC21, "5:1", "1K")
    with pytest.raises(ValueError, match="resolution 4K"):
        sizes.size_for(SPEC21, "1:1", "4K")


def test_size_like_follows_a_reference():
    w, h = sizes.size_like(SPEC21, 3000, 1000, "1K")
    assert w % 32 == 0 and h % 32 == 0
    assert abs(w / h - 3) < 0.1
    # beyond 1:8 the ratio is clamped
    w, h = sizes.size_like(SPEC21, 10000, 100, "1K")
    assert w / h <= 8.5


@pytest.mark.parametrize("name", ["qwen-image-2.1", "qwen-image", "tiny", "tiny-qwen-image"])
def test_editing_a_generated_image_keeps_its_size_through_ten_edits(name):
    spec = load_registry().get(name)
    for tier, _ in spec.tiers:
        for ratio in spec.ratios:
            size = generated = sizes.size_for(spec, ratio, tier)
            for _ in range(10):
                size = sizes.size_like(spec, *size, tier)
                assert size == generated, (ratio, tier)
    if not spec.tiny:  # a photo close to, but not of, one of the model's shapes follows the photo's own shape
        w, h = sizes.size_like(spec, 4000, 2950, spec.default_tier)
        assert abs(w / h - 4000 / 2950) < abs(4 / 3 - 4000 / 2950)


@pytest.mark.parametrize(
    ("spec", "given", "expected"),
    [
        (SPEC21, (1000, 1010), (992, 1024)),
        (SPEC21, (1024, 1024), (1024, 1024)),
        (SPEC20, (1004, 1010), (1008, 1008)),
        (SPEC20, (1330, 1330), (1328, 1328)),
    ],
)
def test_check_size_snaps_to_the_multiple(spec, given, expected):
    assert sizes.check_size(spec, *given) == expected


@pytest.mark.parametrize(
    ("spec", "given", "message"),
    [
        (SPEC21, (128, 1024), "out of range"),
        (SPEC21, (4096, 1024), "out of range"),
        (SPEC20, (2560, 1024), "out of range"),
        (SPEC21, (3072, 3072), "too large"),
        (SPEC21, (256, 2304), "too elongated"),
    ],
)
def test_check_size_bounds(spec, given, message):
    with pytest.raises(ValueError, match=message):
        sizes.check_size(spec, *given)


def test_ratio_choices_show_the_default_tier_size():
    from ui.settings import ratio_choices

    choices = dict((ratio, label) for label, ratio in ratio_choices(SPEC21, first=None))
    assert set(choices) == set(SPEC21.ratios)
    assert "1024×1024" in choices["1:1"]
    assert [value for _, value in ratio_choices(SPEC21, first="match", sized=False)][:2] == ["match", "1:1"]
