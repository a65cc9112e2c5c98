"""The published checkpoints in the Hugging Face cache layout (tests/hub_fixture.py), loaded offline by the app's own
code: the registry's repo ids resolve, the tokenizer is Qwen's, every registry entry runs the README's CLI commands
(a fresh process each, whose peak anonymous memory is held against the planner's load peak), the engine edits where
the CLI runs do not, decodes like the pipeline, runs Turbo's schedule, and fuses the Lightning LoRA. Each checkpoint
is loaded once per module (Qwen-Image-2.1 only by its CLI run); about 2.5 minutes on 2 cores with the fixture built.
Figures land in artifacts/hub_fixture_figures.json.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import hub_configs
import hub_fixture
import pytest
from anon_rss import run_measured

from qwen_image.generation import GenerationRequest
from qwen_image.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "artifacts" / "hub_fixture_figures.json"
ENTRIES = ("qwen-image-2.1", "qwen-image-2.1-turbo", "qwen-image", "qwen-image-lightning")
GiB = 1024**3


def record(key: str, value) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    data[key] = value
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))


def cli_env(hub_home: Path) -> dict:
    return {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def planned_ram(spec, roles=("generate",)) -> dict:
    """What the planner assumes for the fixture's components under the CPU profile: the weights' bytes and the system
    RAM at the load peak (qwen_image.planner.load_ram), counted from the fixture's own configs on the meta device."""
    import diffusers
    import torch
    import transformers
    from huggingface_hub import hf_hub_download

    from qwen_image.planner import coefficients, component_counts, load_ram, weight_bytes
    from qwen_image.profiles import get_profile

    profile = get_profile("cpu", spec.family)
    b = profile.dtype_bytes
    drop = coefficients()["family"][spec.family]["drop_lm_head"]
    weights = {}
    for role in roles:
        repo = spec.generate_checkpoint if role == "generate" else spec.edit_checkpoint
        names = ("text_encoder", "transformer", "vae") if role == "generate" else ("transformer",)
        for comp in names:
            with torch.device("meta"):
                if comp == "text_encoder":
                    config = transformers.AutoConfig.from_pretrained(repo, subfolder=comp)
                    module = getattr(transformers, config.architectures[0])._from_config(config)
                else:
                    config = json.loads(Path(hf_hub_download(repo, "config.json", subfolder=comp)).read_text())
                    module = getattr(diffusers, config["_class_name"]).from_config(config)
            counts = component_counts(module, comp)
            precision = {"text_encoder": profile.text_encoder, "transformer": profile.transformer}.get(comp, "full")
            weights[f"{role}/{comp}"] = weight_bytes(counts, precision, b, drop if comp == "text_encoder" else False)
    return {"weights": sum(weights.values()), "load_peak": load_ram(profile, weights)}


# -- layout and tokenizer ------------------------------------------------------------------------------------------


def test_registry_repo_ids_resolve_offline_from_the_cache(hub_home):
    from huggingface_hub import constants, snapshot_download

    assert Path(constants.HF_HUB_CACHE) == hub_home / "hub"  # HF_HOME decides the cache, as for a user
    repos = hub_fixture.registry_repos()
    assert {"Qwen/Qwen-Image-2.1", "Qwen/Qwen-Image-2.1-Turbo", "Qwen/Qwen-Image-Edit-2511"} <= set(repos)
    for repo_id, what in repos.items():
        path = Path(snapshot_download(repo_id, local_files_only=True))
        folder = hub_fixture.repo_folder(hub_home, repo_id)
        assert path.parent == folder / "snapshots" and (folder / "refs" / "main").read_text() == path.name
        files = [p for p in path.rglob("*") if p.is_file()]
        assert files and all(p.is_symlink() and p.resolve().parent == folder / "blobs" for p in files)
        if what["kind"] == "lora":
            assert all((path / name).is_file() for name in what["files"])
        else:
            index = json.loads((path / "model_index.json").read_text())
            assert (path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
            assert (path / "text_encoder" / "model.safetensors.index.json").is_file()
            assert index["_class_name"] in {"QwenImage21Pipeline", "QwenImagePipeline", "QwenImageEditPlusPipeline"}


@pytest.mark.parametrize(
    "repo_id,subfolder,size",
    [("Qwen/Qwen-Image-2512", "tokenizer", 151665), ("Qwen/Qwen-Image-2.1", "processor", 151669)],
)
def test_tokenizer_is_qwens(hub_home, repo_id, subfolder, size):
    """Ids as public Qwen2.5 / Qwen3 tokenizer.json files give them, so prompt token counts match the real model."""
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer.from_pretrained(repo_id, subfolder=subfolder)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids("the cat sat on the mat") == [1782, 8251, 7578, 389, 279, 5517]
    assert ids("Hello, world! 123") == [9707, 11, 1879, 0, 220, 16, 17, 18]
    assert ids("こんにちは世界") == [89015, 99489]
    assert ids("<|im_start|>user\n<|image_pad|>") == [151644, 872, 198, 151655]
    assert len(tok) == size


# -- the CLI, offline, in a fresh process per command ----------------------------------------------------------------
# Each command loads its model once; the in-process engines below cover what the CLI runs leave out (the 2.1 family's
# edit on Turbo, the Lightning edit), so no checkpoint is loaded twice. Qwen-Image-2.1 itself (the real-width text
# encoder) is loaded by its CLI run only.

CLI_RUNS = {
    "qwen-image-2.1": ("generate",),
    "qwen-image-2.1-turbo": ("generate",),
    "qwen-image": ("generate", "edit"),
    "qwen-image-lightning": ("generate",),
}


@pytest.fixture(scope="module")
def import_anon(hub_home):
    """Anonymous memory of a process that only imports what the CLI imports (subtracted from each CLI's peak)."""
    code = "import torch, diffusers, transformers, bitsandbytes, peft, qwen_image.cli, qwen_image.engine"
    measured = run_measured([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert measured.code == 0, measured.output[-2000:]
    return measured.peak_anon


@pytest.mark.slow
@pytest.mark.parametrize("entry", list(CLI_RUNS))
def test_cli_runs_offline_with_registry_names(hub_home, import_anon, tmp_path, entry):
    """The README's commands, in a fresh process each; the peak of anonymous memory (tensors, not the checkpoint's
    mmap'd file pages) stays within what the planner assumes for loading that profile."""
    spec = load_registry().get(entry)
    steps = [] if spec.sigmas else ["--steps", 2]
    size = ["--width", 256, "--height", 256]
    out, edited = tmp_path / "fox.png", tmp_path / "fox-blue.png"
    commands = {
        "generate": ["generate", "--prompt", "a red fox", "--out", out],
        "edit": ["edit", "--image", out, "--prompt", "make it blue", "--reference-resolution", 256, "--out", edited],
    }
    peaks = []
    for command in CLI_RUNS[entry]:
        argv = [sys.executable, "-m", "qwen_image", *commands[command][:1], "--model", entry, *commands[command][1:]]
        measured = run_measured([str(a) for a in argv + steps + size], env=cli_env(hub_home), cwd=ROOT)
        assert measured.code == 0, measured.output[-3000:]
        assert "256x256" in measured.output
        peaks.append(measured)
    assert out.is_file() and (edited.is_file() or "edit" not in CLI_RUNS[entry])
    plan = planned_ram(spec, CLI_RUNS[entry])
    anon = max(m.peak_anon for m in peaks) - import_anon
    record(
        f"cli_peak_ram/{entry}",
        {
            "anon_over_imports_gib": round(anon / GiB, 2),
            "rss_peak_gib": round(max(m.peak_rss for m in peaks) / GiB, 2),
            "planner_weights_gib": round(plan["weights"] / GiB, 2),
            "planner_load_peak_gib": round(plan["load_peak"] / GiB, 2),
        },
    )
    # activations of a 256-px run and the allocator's leftovers come on top of the load peak the planner counts
    assert anon <= plan["load_peak"] * 1.15 + 0.5 * GiB, (anon / GiB, plan)


# -- the engine, in this process: one engine per entry, shared by the tests below -----------------------------------


@pytest.fixture(scope="module")
def engines(hub_home):
    from qwen_image.factory import build_engine, choose_setup

    cache = {}

    def get(name):
        if name not in cache:
            engine = build_engine(choose_setup(name, profile="cpu"))
            engine.start()
            engine.wait_ready()
            assert engine.status.ready, engine.status.message
            cache[name] = engine
        return cache[name]

    yield get
    for engine in cache.values():
        engine.unload()


def _steps(spec) -> dict:
    return {} if spec.sigmas else {"steps": 2}


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["qwen-image-2.1-turbo", "qwen-image-lightning"])
def test_engine_generates_and_edits(engines, entry):
    """The edits the CLI runs leave out: the 2.1 family's one pipeline editing (on Turbo) and the Lightning preset's
    edit pipeline with its own LoRA."""
    spec = load_registry().get(entry)
    engine = engines(entry)
    first = engine.generate(GenerationRequest(prompt="a red fox", width=256, height=256, seed=1, **_steps(spec)))
    assert first.images[0].size == (256, 256)
    request = GenerationRequest(
        prompt="make it blue", images=(first.images[0],), width=256, height=256, seed=2, reference_resolution=256
    )
    edited = engine.generate(replace(request, **_steps(spec)))
    assert edited.images[0].size == (256, 256) and edited.request.images


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["qwen-image-2.1-turbo", "qwen-image"])
def test_engine_decode_equals_the_pipelines_own(engines, entry):
    """The engine decodes the pipeline's latents itself (qwen_image.decode); on the same latents it must give the
    pipeline's own pixels, with the real non-trivial latents_mean/std. Turbo carries the 2.1 family's VAE (the same
    config and weights as Qwen-Image-2.1's in the fixture)."""
    import torch

    from qwen_image import decode as dec

    pipe = engines(entry)._loaded.pipeline("generate")
    assert max(abs(s - 1) for s in pipe.vae.config.latents_std) > 0.5  # the real, non-trivial latent statistics
    assert max(abs(m) for m in pipe.vae.config.latents_mean) > 0.5
    call = dict(prompt="a red fox", height=256, width=256, num_inference_steps=2)  # Turbo: its own 8 sigmas
    if entry == "qwen-image":
        call["true_cfg_scale"] = 1.0
    latents = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="latent").images
    assert torch.isfinite(latents).all()
    ours = (dec.latents_to_pixels(pipe, latents, 256, 256).float() / 2 + 0.5).clamp(0, 1)
    theirs = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="pt").images.float()
    assert ours.shape == theirs.shape and torch.isfinite(theirs).all()
    assert float(theirs.std()) > 0.01  # a picture, not a constant
    diff = float((ours - theirs).abs().max())
    record(f"decode_max_abs_diff/{load_registry().get(entry).family}", diff)
    assert diff < 1e-5


@pytest.mark.slow
def test_turbo_runs_the_checkpoints_schedule(engines):
    spec = load_registry().get("qwen-image-2.1-turbo")
    engine = engines("qwen-image-2.1-turbo")
    pipe = engine._loaded.pipeline("generate")
    published = list(pipe.config.sample_sigmas)  # model_index.json of the Turbo checkpoint
    assert published == pytest.approx(hub_configs.TURBO_SIGMAS)
    assert list(spec.sigmas) == pytest.approx(published)
    engine.generate(GenerationRequest(prompt="a red fox", width=256, height=256, seed=4))
    used = pipe.scheduler.sigmas.tolist()  # what the last run stepped through (its scheduler config applied)
    assert used[:-1] == pytest.approx(published, abs=1e-6) and used[-1] == 0.0


@pytest.mark.slow
def test_lightning_lora_fuses_into_the_lora_modules_with_effect(engines):
    import numpy as np
    import torch

    plain, light = engines("qwen-image"), engines("qwen-image-lightning")
    a = plain._loaded.pipeline("generate").transformer.state_dict()
    b = light._loaded.pipeline("generate").transformer.state_dict()
    layers = light._loaded.generate.transformer.config.num_layers
    expected = {f"transformer_blocks.{i}.{m}.weight" for i in range(layers) for m in hub_configs.LORA_MODULES}
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == expected  # every LoRA key of the real format found its module; nothing else moved
    assert not any("lora" in k for k in b)
    request = GenerationRequest(prompt="a red fox", width=256, height=256, seed=5, steps=2, true_cfg=1.0)
    x = np.asarray(plain.generate(request).images[0], dtype=float)
    y = np.asarray(light.generate(request).images[0], dtype=float)
    record("lightning_vs_plain_mean_abs_pixel_diff", round(float(np.abs(x - y).mean()), 3))
    assert np.abs(x - y).mean() > 1.0


def test_fp8_streamed_load_fuses_like_peft(hub_home):
    """Defect 8: the fp8 transformer is streamed with the LoRA fused per tensor; same weights as fuse-then-cast."""
    import diffusers
    import torch

    from qwen_image import loader
    from qwen_image.profiles import get_profile

    spec = load_registry().get("qwen-image-lightning")
    lora = spec.lora_generate
    profile = replace(get_profile("cpu", spec.family), transformer="fp8")
    streamed = loader.load_transformer(spec.generate_checkpoint, profile, lora)
    local = loader.local_snapshot(spec.generate_checkpoint, "transformer")
    ref = diffusers.QwenImageTransformer2DModel.from_pretrained(local, subfolder="transformer", dtype=torch.float32)
    state = diffusers.QwenImagePipeline.lora_state_dict(lora["repo"], weight_name=lora["weight_name"])
    ref.load_lora_adapter(state, prefix="transformer", adapter_name="preset")
    ref.fuse_lora(lora_scale=1.0)
    ref.unload_lora()
    ref.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    s, r = streamed.state_dict(), ref.state_dict()
    assert s.keys() == r.keys()
    fp8 = [k for k in s if s[k].dtype == torch.float8_e4m3fn]
    assert len(fp8) > 20 and all(r[k].dtype == torch.float8_e4m3fn for k in fp8)
    for k in s:
        x, y = s[k].float(), r[k].float()
        # one fp8 step (1/8 relative) at most where float32 summation order differs
        assert torch.allclose(x, y, rtol=0.13, atol=1e-6), k
        assert (x != y).float().mean() < 0.01, k
