"""Placing a pipeline on the accelerator under a memory profile, and keeping each phase's residents what they should be.

The profile's offload mode uses the libraries' own mechanisms: diffusers' model / sequential CPU offload, diffusers'
block-level group offload for the transformer, and accelerate ``CpuOffload`` hooks for the text encoder and the VAE
under group offload. On top of them, two phase boundaries that the pipelines do not draw themselves:

- around ``prepare_latents`` (which the pipelines call right after their last ``encode_prompt``, and which
  VAE-encodes the reference images): the text encoder leaves before it, the VAE after it. diffusers' model offload
  chains text encoder -> transformer -> VAE, so an edit held the text encoder through the references' encoding, and
  the VAE through denoising;
- the VAE leaves after the engine's own decode (the pipelines' ``maybe_free_model_hooks`` runs before it, so nothing
  else moves it off).

So under model and group offload every phase holds only the component it runs (the transformer streams its blocks
under group offload), which is what qwen_image.planner.resident_components counts.

``device`` is where the weights run: "cuda" in the app; tests pass "cpu:0", a CPU device that the hooks treat as an
accelerator, so that the real hooks run and every move is visible without a GPU.
"""

from __future__ import annotations

import contextlib

from .profiles import Profile


def offload_hook(module):
    """The accelerate ``CpuOffload`` hook on ``module`` (alone or inside a SequentialHook), or None."""
    from accelerate.hooks import CpuOffload, SequentialHook

    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return next((h for h in hooks if isinstance(h, CpuOffload)), None)


def offload(module) -> None:
    """Move an offload-hooked module back to the CPU now (its hook brings it back when it runs next)."""
    if module is None:
        return
    hook = offload_hook(module)
    if hook is not None:
        hook.init_hook(module)


def offload_text_encoder(pipe) -> None:
    offload(getattr(pipe, "text_encoder", None))


def release_after_decode(pipe) -> None:
    """After the engine's own decode: the VAE leaves the accelerator (model and group offload)."""
    offload(getattr(pipe, "vae", None))


def _phase_boundaries(pipe) -> None:
    """Wrap ``pipe.prepare_latents`` (once per pipeline instance): the text encoder is offloaded before it, the VAE
    after it (each where it has an offload hook)."""
    if getattr(pipe, "_qic_phases", False):
        return
    prepare = pipe.prepare_latents

    def prepare_latents(*args, **kwargs):
        offload_text_encoder(pipe)
        try:
            return prepare(*args, **kwargs)
        finally:
            offload(pipe.vae)

    pipe.prepare_latents = prepare_latents
    pipe._qic_phases = True


def remove_transformer_hooks(pipe) -> None:
    """Remove accelerate hooks from a pipeline's transformer only: the text encoder and the VAE may be shared with
    another pipeline whose hooks they carry (removing those stranded the 20B text encoder on the CPU under group
    offload). diffusers' group-offload hooks stay: they keep the blocks on the CPU between calls."""
    from accelerate.hooks import remove_hook_from_module

    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        with contextlib.suppress(Exception):
            remove_hook_from_module(transformer, recurse=True)
    if hasattr(pipe, "_all_hooks"):
        pipe._all_hooks = []


def place_pipeline(pipe, profile: Profile, device: str = "cuda") -> None:
    """Move a pipeline to the device or install the profile's offloading."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    if profile.device == "cpu":
        pipe.to("cpu")
        return
    target = torch.device(device)
    _phase_boundaries(pipe)
    if profile.offload == "none":
        pipe.to(target)
    elif profile.offload == "model":
        pipe.enable_model_cpu_offload(device=target)
    elif profile.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=target)
    elif profile.offload == "group":
        group_offload(pipe, profile, target)


def group_offload(pipe, profile: Profile, device) -> None:
    """Transformer blocks streamed from CPU memory (on a CUDA stream where there is one); the text encoder and the
    VAE on the accelerator only while they run (moving the VAE costs tens of milliseconds; keeping it resident
    would cost the 8 GB profile the room for a bf16 vision tower)."""
    import torch
    from accelerate import cpu_offload_with_hook
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    if not _is_group_offload_enabled(pipe.transformer):
        pipe.transformer.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=profile.group_blocks,
            use_stream=device.type == "cuda",
            low_cpu_mem_usage=False,
        )
    # checked on the modules themselves, not remembered: a hook that something removed is attached again
    for module in (pipe.text_encoder, pipe.vae):
        if offload_hook(module) is None:
            cpu_offload_with_hook(module, execution_device=device)
