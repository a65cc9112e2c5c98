"""The GPU check (bench/gpu_check.py) without a GPU: its smoke mode end to end, and the in-memory quantization the
real-size measurements rely on, against the app's from_pretrained loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_in_memory_quantization_matches_from_pretrained(tmp_path, precision):
    """bench/gpu_build.quantize_text_encoder makes the layers, bytes (and, for int8, the outputs) that transformers'
    from_pretrained with the app's BitsAndBytesConfig makes."""
    import torch
    import transformers
    from gpu_build import build_bf16, quantize_text_encoder

    from qwen_image import tiny
    from qwen_image.architectures import load_architecture
    from qwen_image.loader import drop_lm_head, text_encoder_quantization

    arch = load_architecture("tiny-qwen-image-2.1")["text_encoder"]
    tokenizer = tiny.build_tokenizer()
    torch.manual_seed(0)
    bf16 = build_bf16(arch, "cpu", tiny.token_overrides(tokenizer, 640))  # as the GPU measurements build it
    bf16.save_pretrained(tmp_path)
    config = text_encoder_quantization(precision, torch.bfloat16)
    loaded = getattr(transformers, arch.class_name).from_pretrained(
        tmp_path, dtype=torch.bfloat16, quantization_config=config
    )
    drop_lm_head(bf16)
    drop_lm_head(loaded)
    ours = quantize_text_encoder(bf16, precision, torch.bfloat16)

    def layers(model):
        return {name: type(m).__name__ for name, m in model.named_modules() if "Linear" in type(m).__name__}

    def nbytes(model):
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

    assert layers(ours) == layers(loaded)
    assert nbytes(ours) == nbytes(loaded)
    if precision == "int8":  # nf4 does not run on the CPU at the tiny widths (blocks of 64)
        ids = tokenizer("a red fox in the snow", return_tensors="pt")
        with torch.no_grad():
            a = ours(**ids, output_hidden_states=True).hidden_states[-1]
            b = loaded(**ids, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path):
    """The whole check in its smoke mode: every step runs, the tests marked cuda are collected (and skip here), and
    the profile measurements run the app's offloading with the tiny models."""
    out = tmp_path / "check"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["pytest_cuda", "gpu_profiles"], proc.stdout
    assert all(s["rc"] == 0 for s in summary["steps"]), (summary, (out / "gpu_profiles.log").read_text()[-3000:])
    tests = summary["tests"]
    assert tests["tests"] >= 15 and tests["failures"] == tests["errors"] == 0
    profiles = json.loads((out / "gpu_profiles_smoke.json").read_text())
    rows = profiles["rows"]
    assert {(r["model"], r["profile"]) for r in rows} == {
        (m, p) for m in ("tiny", "tiny-qwen-image") for p in ("48gb", "24gb", "12gb")
    }
    assert not [r for r in rows if r.get("error")]
    assert any(r["task"] == "edit" for r in rows)  # 2.1's 12gb edit
    assert all(r["predicted_gib"] > 0 and r["s_per_step"] > 0 for r in rows)
    assert "Tests marked cuda" in (out / "summary.md").read_text()
    assert json.loads((out / "environment.json").read_text())["torch"]
    assert proc.returncode == 0, proc.stderr[-2000:]  # without a GPU every cuda test skips: 0
