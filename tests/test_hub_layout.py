"""The published checkpoints in the Hugging Face cache layout (tests/hub_fixture.py), loaded offline by the app's own
code: the registry's repo ids resolve, the tokenizer is Qwen's, every registry entry generates and edits through the
CLI and the engine, the engine decodes like the pipeline, Turbo runs the checkpoint's schedule, the Lightning LoRA
fuses, and peak RAM is compared with the planner's weights. Figures land in artifacts/hub_fixture_figures.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import hub_configs
import hub_fixture
import pytest

from qwen_image.registry import load_registry
from qwen_image.requests import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "artifacts" / "hub_fixture_figures.json"
ENTRIES = ("qwen-image-2.1", "qwen-image-2.1-turbo", "qwen-image", "qwen-image-lightning")
GiB = 1024**3


def record(key: str, value) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    data[key] = value
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))


def run_cli(hub_home: Path, *args, timeout: float = 600) -> tuple[int, str, int]:
    """``python -m qwen_image ARGS`` with HF_HOME at the fixture, offline: (exit code, output, peak RSS bytes)."""
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qwen_image", *map(str, args)], cwd=ROOT, env=env, stdout=out, stderr=out
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS (ru_maxrss, KiB on Linux)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, out.read().decode(errors="replace"), usage.ru_maxrss * 1024


def planned_ram(spec, roles=("generate",)) -> float:
    """Bytes of weights the planner's model assigns to the fixture's components under the CPU profile."""
    import diffusers
    import torch
    import transformers
    from huggingface_hub import hf_hub_download

    from qwen_image.planner import coefficients, component_counts, weight_bytes
    from qwen_image.profiles import get_profile

    profile = get_profile("cpu", spec.family)
    b = profile.dtype_bytes
    drop = coefficients()["family"][spec.family]["drop_lm_head"]
    total = 0.0
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
            total += weight_bytes(counts, precision, b, drop if comp == "text_encoder" else False)
    return total


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


@pytest.fixture(scope="module")
def baseline_rss(hub_home):
    """Peak RSS of a process that only imports what the CLI imports (subtracted from the CLI's peak)."""
    code = "import torch, diffusers, transformers, bitsandbytes, qwen_image.cli, qwen_image.engine"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=out)
        _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss * 1024


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES)
def test_cli_generates_offline_with_registry_names(hub_home, baseline_rss, tmp_path, entry):
    spec = load_registry().get(entry)
    out = tmp_path / "fox.png"
    steps = [] if spec.sigmas else ["--steps", 2]
    code, text, peak = run_cli(
        hub_home, "generate", "--model", entry, "--prompt", "a red fox", *steps, "--width", 256, "--height", 256,
        "--out", out,
    )  # fmt: skip
    assert code == 0, text[-3000:]
    assert out.is_file() and "256x256" in text
    roles = ("generate",)
    if not spec.one_pipeline:  # the 20B entries also edit through the CLI (a second transformer is loaded)
        edited = tmp_path / "fox-blue.png"
        code, text, peak_edit = run_cli(
            hub_home, "edit", "--model", entry, "--image", out, "--prompt", "make it blue", *steps,
            "--width", 256, "--height", 256, "--reference-resolution", 256, "--out", edited,
        )  # fmt: skip
        assert code == 0, text[-3000:]
        assert edited.is_file()
        peak, roles = max(peak, peak_edit), ("generate", "edit")
    planned = planned_ram(spec, roles)
    ratio = (peak - baseline_rss) / planned
    record(
        f"cli_peak_rss/{entry}",
        {"peak_gib": round(peak / GiB, 2), "over_imports_gib": round((peak - baseline_rss) / GiB, 2),
         "planner_weights_gib": round(planned / GiB, 2), "ratio": round(ratio, 2)},
    )  # fmt: skip
    # Loading holds more than the resident weights (checkpoint pages, bf16->fp32 copies, the lm_head the 8-bit text
    # encoder keeps in full precision until the app drops it) plus activations; past this bound is a second copy.
    assert peak - baseline_rss < 4 * planned + 1 * GiB


# -- the engine, in this process --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(hub_home):
    from qwen_image.factory import build_engine, choose_setup

    cache = {}

    def get(name):
        if name not in cache:
            engine = build_engine(choose_setup(name, profile="cpu"))
            engine.start()
            engine.wait_ready()
            cache[name] = engine
        return cache[name]

    yield get
    for engine in cache.values():
        engine.unload()


def _steps(spec) -> dict:
    return {} if spec.sigmas else {"steps": 2}


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES)
def test_engine_generates_and_edits(engines, entry):
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
@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(
            "qwen-image-2.1",
            marks=pytest.mark.xfail(reason="NaN in one of the two decodes on the fixture: under investigation"),
        ),
        "qwen-image",
    ],
)
def test_engine_decode_equals_the_pipelines_own(engines, entry):
    import torch

    from qwen_image import decode as dec

    pipe = engines(entry)._loaded.pipeline("generate")
    std = pipe.vae.config.latents_std
    assert max(abs(s - 1) for s in std) > 0.5  # the real, non-trivial latent statistics
    call = dict(prompt="a red fox", height=256, width=256, num_inference_steps=1)
    if entry == "qwen-image":
        call["true_cfg_scale"] = 1.0
    latents = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="latent").images
    ours = (dec.latents_to_pixels(pipe, latents, 256, 256).float() / 2 + 0.5).clamp(0, 1)
    theirs = pipe(**call, generator=torch.Generator().manual_seed(3), output_type="pt").images.float()
    assert ours.shape == theirs.shape
    diff = float((ours - theirs).abs().max())
    record(f"decode_max_abs_diff/{entry}", diff)
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
    a = plain._loaded.generate.transformer.state_dict()
    b = light._loaded.generate.transformer.state_dict()
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
    lora = spec.extra["lora_generate"]
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
