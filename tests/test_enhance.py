"""The prompt enhancer: reading answers, the local enhancer on the tiny models (random weights: the rewrite is
gibberish, but deterministic), lm_head on first use and its bytes, and both prompts stored with the turn."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conversations.jobs import JobManager
from conversations.store import Store
from conversations.turns import Enhance, TurnService
from qwen_image.backend import Cancelled
from qwen_image.enhance import load_config, task_for
from qwen_image.enhance.answer import nearest_ratio, parse, visible
from qwen_image.enhance.lm_head import LmHead, locate
from qwen_image.enhance.local import LocalEnhancer
from qwen_image.generation import GenerationRequest
from qwen_image.metadata import JSON_KEY
from qwen_image.planner import (
    PHASE_USES,
    Workload,
    count_params,
    lm_head_bytes,
    lm_head_resident,
    predict,
    resident_components,
)
from qwen_image.profiles import get_profile
from qwen_image.registry import load_registry

OWNER = "anon-" + "e" * 24
TOKENS = 8


def small(tokens: int = TOKENS):
    config = load_config()
    return replace(config, local=replace(config.local, max_new_tokens=tokens))


# -- answers ----------------------------------------------------------------------------------------------------------
def test_answers_of_every_convention_are_read():
    official = '<think>wide scene</think>\n{"rewritten_prompt": "A fox {in} snow", "wh_ratio": "21:9"}'
    assert parse(official).prompt == "A fox {in} snow" and parse(official).ratio == "21:9"
    edit = 'ok {"rewritten_prompt": "Recolor the car", "wh_ratio": "", "ratio_follow": "<image2>"}'
    assert parse(edit).follow == 2
    assert parse('```json\n{"Rewritten": "Add a hat"}\n```').prompt == "Add a hat"  # the 20B Spaces' key
    assert parse('"A plain answer."').prompt == "A plain answer."
    assert parse("<think>still thinking, out of tokens").prompt == ""
    assert parse('{"rewritten_prompt": "cut off').prompt == ""
    # while streaming: the rewrite so far, without thinking or JSON syntax
    assert visible("<think>hmm") == ""
    assert visible('<think>a</think>{"rewritten_prompt": "A red \\"fox') == 'A red "fox'
    assert nearest_ratio("21:9", ["1:1", "16:9", "9:16"]) == "16:9"
    assert nearest_ratio("wide", ["1:1"]) is None


# -- the local enhancer -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(engine21):
    enhancer = LocalEnhancer(engine21, small())
    yield enhancer
    enhancer.release()


def test_lm_head_loads_on_first_use_streams_is_bounded_and_deterministic(engine21, local):
    local.release()
    text_encoder = engine21._loaded.generate.text_encoder
    assert local.lm_head_bytes == 0 and isinstance(text_encoder.lm_head, torch.nn.Identity)
    task = task_for(GenerationRequest(prompt="a red fox"), engine21.spec)
    parts: list[str] = []
    first = local.enhance(task, on_text=parts.append)
    assert not first.note and first.changed and first.original == "a red fox"
    assert 0 < first.tokens <= TOKENS
    assert parts and parts[-1] == first.prompt  # streamed, ending with the rewrite
    # the bytes the planner counts for the enhancer are the bytes loaded (tiny model: 8-bit text encoder, CPU)
    counts = count_params(engine21.spec.real_config)["text_encoder"]
    assert local.lm_head_bytes == lm_head_bytes(counts, engine21.profile) > 0
    assert isinstance(text_encoder.lm_head, torch.nn.Identity)  # detached again: encoding never computes logits
    assert local.enhance(task).prompt == first.prompt  # greedy: the same rewrite
    local.release()
    assert local.lm_head_bytes == 0


def test_edit_rewrite_looks_at_the_images(engine21, local):
    task = task_for(GenerationRequest(prompt="make it blue"), engine21.spec, [Image.new("RGB", (96, 64), "red")])
    assert task.mode == "edit"
    result = local.enhance(task)
    assert result.changed and 0 < result.tokens <= TOKENS


def test_the_20b_pair_rewrites_with_its_tokenizer_and_the_edit_processor(engine20):
    enhancer = LocalEnhancer(engine20, small())
    try:
        text = enhancer.enhance(task_for(GenerationRequest(prompt="a red fox"), engine20.spec))
        image = Image.new("RGBA", (80, 60), (255, 0, 0, 128))
        edit = enhancer.enhance(task_for(GenerationRequest(prompt="make it blue"), engine20.spec, [image]))
        assert text.changed and edit.changed and not (text.note or edit.note)
        assert text.prompt.endswith("Ultra HD, 4K, cinematic composition.")  # the 20B Spaces' quality phrase
        assert not edit.prompt.endswith("cinematic composition.")
    finally:
        enhancer.release()


def test_stop_ends_the_rewrite_and_frees_the_gpu(engine21, local):
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        local.enhance(task_for(GenerationRequest(prompt="a boat"), engine21.spec), lambda text: cancel.set(), cancel)
    assert not engine21._job_lock.locked()
    assert local.enhance(task_for(GenerationRequest(prompt="a boat"), engine21.spec)).changed


def test_no_lm_head_in_the_checkpoint_is_harmless(engine21, tmp_path):
    (tmp_path / "text_encoder").mkdir()
    save_file({"model.norm.weight": torch.ones(4)}, tmp_path / "text_encoder" / "model.safetensors")
    enhancer = LocalEnhancer(engine21, small())
    enhancer._head = LmHead(str(tmp_path), "int8")
    result = enhancer.enhance(task_for(GenerationRequest(prompt="a kite"), engine21.spec))
    assert result.prompt == "a kite" and not result.changed
    assert "no lm_head" in result.note and "\n" not in result.note


def test_a_sharded_checkpoint_is_read_through_its_index(tmp_path):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    save_file({"lm_head.weight": torch.ones(3, 2)}, folder / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert locate(str(tmp_path)) == (folder / "model-00002-of-00002.safetensors", "lm_head.weight")


def test_the_planner_counts_lm_head_when_the_enhancer_is_on():
    """Beside the text encoder: in every phase when nothing is offloaded, else while the text encoder is on the device
    (the rewrite runs then, and the lm_head is released after it); never in the offloaded weights or the load peak."""
    reg = load_registry()
    for key, vocab, hidden in (("qwen-image-2.1", 151936, 4096), ("qwen-image", 152064, 3584)):
        spec = reg.get(key)
        counts = count_params(spec.real_config)["text_encoder"]
        assert lm_head_bytes(counts, get_profile("48gb", spec.family)) == vocab * hidden * 2  # bf16
        assert lm_head_bytes(counts, get_profile("24gb", spec.family)) == vocab * hidden + 4 * vocab  # LLM.int8
        for name in ("48gb", "24gb", "12gb", "minimal"):
            profile = get_profile(name, spec.family)
            off, on = predict(spec, profile, Workload()), predict(spec, profile, Workload(enhancer=True))
            extra = lm_head_bytes(counts, profile) / 2**30
            for phase, gb in off.phases_gb.items():
                added = extra if profile.offload == "none" or phase == "encode" else 0.0
                assert on.phases_gb[phase] == pytest.approx(gb + added, abs=0.002), (name, phase)
            assert (on.host_ram_gb, on.load_ram_gb) == (off.host_ram_gb, off.load_ram_gb)
    for offload in ("none", "model", "group"):  # the same rule as the components the engine keeps on the device
        for phase in PHASE_USES:
            assert lm_head_resident(offload, phase) == ("text_encoder" in resident_components(offload, phase))


def test_an_offloading_profile_releases_lm_head_after_each_rewrite(engine21, local):
    """With the text encoder offloaded after its work, its lm_head does not stay on the device either."""
    loaded = engine21._loaded
    task = task_for(GenerationRequest(prompt="a kite"), engine21.spec)
    try:  # the enhancer reads the profile's offload mode only (the weights stay where they are)
        engine21._loaded = replace(loaded, profile=replace(loaded.profile, device="cuda", offload="model"))
        assert local.enhance(task).changed and local.lm_head_bytes == 0
    finally:
        engine21._loaded = loaded
    assert local.enhance(task).changed and local.lm_head_bytes > 0  # nothing offloaded: kept for the next rewrite


# -- the turn service with the local enhancer --------------------------------------------------------------------------
def test_an_enhanced_turn_stores_both_prompts_and_draws_the_rewrite(engine21, local, tmp_path):
    store = Store(tmp_path)
    store.ensure_owner(OWNER)
    jobs = JobManager(engine21, store)
    turns = TurnService(engine21, store, jobs, enhancer=local)
    try:
        parts: list[str] = []
        request = GenerationRequest(prompt="a lighthouse", steps=2)
        snap = turns.start(OWNER, None, request, enhance=Enhance(on_text=parts.append))
        *_, last = jobs.watch(OWNER, snap.id)
        assert last.state == "done", last.error
        turn = store.get_turn(OWNER, snap.turn_id)
        rewrite = turn.settings["prompt"]
        assert turn.prompt == "a lighthouse" == turn.settings["original_prompt"]  # the user's words, shown
        assert rewrite != "a lighthouse" and rewrite == parts[-1] and "text encoder" in turn.settings["enhancer"]
        with Image.open(turn.outputs[0].path) as im:
            data = json.loads(im.info[JSON_KEY])
            assert (data["prompt"], data["original_prompt"]) == (rewrite, "a lighthouse")
            assert im.info["parameters"].splitlines()[0] == rewrite  # A1111: the prompt that was drawn
        # regenerate draws the same rewrite again, without enhancing
        again = turns.regenerate(OWNER, turn.conversation_id)
        *_, last = jobs.watch(OWNER, again.id)
        regenerated = store.get_turn(OWNER, again.turn_id)
        assert regenerated.settings["prompt"] == rewrite and regenerated.settings["original_prompt"] == "a lighthouse"
        # a rewrite the user edited is drawn as written
        edited = turns.start(OWNER, None, request, enhance=Enhance(rewrite="a tall red lighthouse at dusk"))
        *_, last = jobs.watch(OWNER, edited.id)
        assert store.get_turn(OWNER, edited.turn_id).settings["prompt"] == "a tall red lighthouse at dusk"
    finally:
        jobs.shutdown()
        store.close()
