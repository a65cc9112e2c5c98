"""The layering: qwen_image (engine) <- conversations <- serving <- ui, and no torch work to start the app, use
conversations, or serve from remote backends."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """For each module file of a package, the top-level names of everything it imports (also inside functions)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("qwen_image", {"gradio", "conversations", "ui", "app"}),
        ("conversations", {"gradio", "ui", "app"}),
        ("serving", {"ui", "app", "torch", "diffusers", "transformers"}),
    ],
)
def test_imports_point_down_only(package, forbidden):
    offenders = {module: sorted(names & forbidden) for module, names in imported_modules(package).items()}
    assert not {m: n for m, n in offenders.items() if n}, f"{package} must not import {sorted(forbidden)}"


def test_the_app_and_the_conversations_start_without_torch():
    """A remote backend serves without torch: importing the UI, the app and the conversation package (and building
    the page's modules) must not import torch or diffusers."""
    code = """
import importlib, pkgutil, sys
import app, conversations, serving, ui
for package in (conversations, serving, ui):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
import qwen_image.backend, qwen_image.generation, qwen_image.images, qwen_image.registry
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_the_app_builds_in_backend_mode_without_torch(tmp_path):
    """``python app.py --backend URL`` does no torch work: building the whole app (options, remote pool, store, job
    queue, page, OpenAI routes and MCP tools) imports none of torch, diffusers or transformers."""
    code = f"""
import sys
from ui.launch import api_app_kwargs, build, parse_args
args = parse_args(["--backend", "http://127.0.0.1:9/v1", "--data-dir", {str(tmp_path)!r}, "--openai-api", "--mcp"])
demo, ctx, _ = build(args)
kwargs = api_app_kwargs(args, ctx, None)
assert ctx.backend.status.state == "error" and len(kwargs["routes"]) == 5, (ctx.backend.status, kwargs)
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
