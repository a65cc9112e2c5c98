"""Choosing model and memory profile for this machine, and building the engine."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from .engine import Engine
from .hardware import Hardware, detect
from .loader import LoadOptions
from .planner import Plan, choose, cpu_plan, planning_workload, predict
from .profiles import get_profile
from .registry import ModelSpec, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    spec: ModelSpec
    plan: Plan
    hardware: Hardware
    reason: str


def choose_setup(
    model: str = "auto",
    family: str | None = None,
    profile: str | None = None,
    hardware: Hardware | None = None,
    vram_gb: float | None = None,
    ram_gb: float | None = None,
    enhancer: bool = False,
) -> Choice:
    """Model spec + memory plan for this machine (or for the given VRAM/RAM sizes); ``enhancer``: the local prompt
    enhancer is on (its lm_head is counted)."""
    hw = hardware or detect()
    cuda = hw.cuda if vram_gb is None else vram_gb > 0
    spec = resolve_model(model, family, cuda=cuda)
    vram = vram_gb if vram_gb is not None else hw.vram_free_gb
    # a hypothetical --vram without --ram plans for the card alone; otherwise this machine's RAM counts too
    ram = ram_gb if ram_gb is not None else (None if vram_gb is not None else hw.ram_available_gb)
    workload = planning_workload(spec, enhancer=enhancer)
    if profile:
        prof = get_profile(profile, spec.family)
        budget = vram if prof.device == "cuda" else ram
        plan = predict(spec, prof, workload, budget_gb=budget)
        return Choice(spec, plan, hw, f"profile {profile} chosen by --profile")
    if not cuda:
        return Choice(spec, cpu_plan(spec, ram or hw.ram_available_gb, workload), hw, "no CUDA GPU: CPU profile")
    plan = choose(spec, vram, ram, workload)
    why = f"most resident profile predicted to fit {vram:.1f} GiB of free VRAM"
    if not plan.fits:
        why = f"no profile is predicted to fit {vram:.1f} GiB of VRAM"
        if plan.notes:
            why += f" ({plan.notes[-1]})"
        why += "; using the smallest"
    return Choice(spec, plan, hw, why)


def engine_settings(choice: Choice, options: LoadOptions | None = None) -> tuple:
    """(profile, hardware, options, vram budget) for an engine running ``choice``."""
    profile = get_profile(choice.plan.profile, choice.spec.family)
    options = options or LoadOptions()
    if options.keep_both_transformers is None and not choice.spec.one_pipeline:
        # the edit transformer stays loaded beside the generate one only when system RAM holds both
        need = choice.plan.host_ram_gb + choice.plan.weights_gb["transformer"]
        keep = choice.spec.tiny or need <= choice.hardware.ram_total_gb * 0.85
        options = replace(options, keep_both_transformers=keep)
    return profile, choice.hardware, options, choice.plan.budget_gb


def _slow_motion(engine: Engine) -> Engine:
    engine.step_delay = float(os.environ.get("QIC_STEP_DELAY", "0") or 0)
    return engine


def build_engine(choice: Choice, options: LoadOptions | None = None) -> Engine:
    profile, hardware, options, budget = engine_settings(choice, options)
    return _slow_motion(Engine(choice.spec, profile, hardware, options, vram_budget_gb=budget))


def nvidia_present() -> bool:
    """A cheap guess (no torch import) whether an NVIDIA GPU is here; the loading thread checks for real."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def deferred_engine(
    model: str = "auto",
    family: str | None = None,
    profile: str | None = None,
    options: LoadOptions | None = None,
    enhancer: bool = False,
) -> Engine:
    """An engine whose hardware probe and profile choice run in its loading thread, so a page can be served at once.

    The model is resolved from a torch-free guess of the hardware; if torch disagrees, loading fails with a message.
    """
    spec = resolve_model(model, family, cuda=nvidia_present())

    def configure():
        choice = choose_setup(model, family, profile, enhancer=enhancer)
        if choice.spec.key != spec.key:
            raise RuntimeError(
                f"an NVIDIA driver is present but PyTorch cannot use CUDA, so {spec.label} cannot run here; install a "
                "CUDA build of torch, or start with --model tiny"
            )
        log.info("model %s, profile %s: %s", spec.key, choice.plan.profile, choice.reason)
        return engine_settings(choice, options)

    return _slow_motion(Engine(spec, None, None, options or LoadOptions(), configure=configure))
