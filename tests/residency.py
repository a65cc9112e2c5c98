"""What is on the accelerator in each phase of a run, observed on the CPU.

The engine's offloading (qwen_image.offload) runs for real with ``LoadOptions(device="cpu:0")``: accelerate's and
diffusers' hooks treat "cpu:0" as the accelerator and move whole modules there with ``Module.to``, but a CPU tensor
cannot tell "cpu:0" from "cpu" afterwards. ``Residency`` therefore records the target of every ``Module.to`` call
(patched on ``torch.nn.Module`` for the duration) and, at probes placed where each phase's work runs, which watched
components were last sent to the accelerator.
"""

from __future__ import annotations

import torch

ACCELERATOR = "cpu:0"


def _target(args, kwargs):
    device = torch._C._nn._parse_to(*args, **kwargs)[0]
    if device is None:
        return None
    return "on" if device == torch.device(ACCELERATOR) else "off"


class Residency:
    def __init__(self):
        self.where: dict[int, str] = {}  # id(module) -> "on" | "off", last move
        self.seen: dict[str, list[frozenset]] = {}  # phase -> watched components on, each time the phase ran
        self.components: dict[str, torch.nn.Module] = {}
        self._handles = []
        self._original = torch.nn.Module.to

    def __enter__(self):
        original = self._original
        where = self.where

        def to(module, *args, **kwargs):
            state = _target(args, kwargs)
            if state is not None:
                where[id(module)] = state
            return original(module, *args, **kwargs)

        torch.nn.Module.to = to
        return self

    def __exit__(self, *exc):
        torch.nn.Module.to = self._original
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def on(self) -> frozenset:
        return frozenset(name for name, m in self.components.items() if self.where.get(id(m)) == "on")

    def watch(self, pipe) -> None:
        """Watch a pipeline's text encoder, VAE and transformer, with a probe where each phase runs (inside each
        component, so after its own offload hook has moved it)."""
        te, vae, tr = pipe.text_encoder, pipe.vae, pipe.transformer
        self.components.update(text_encoder=te, vae=vae)
        if tr is not None:
            self.components["transformer"] = tr
        probes = {"encode": te.model, "references": vae.encoder, "decode": vae.decoder}
        if tr is not None:
            probes["denoise"] = tr.transformer_blocks[0]
        for phase, module in probes.items():
            if getattr(module, "_qic_probe", None) is self:
                continue
            module._qic_probe = self
            self._handles.append(module.register_forward_pre_hook(self._probe(phase)))

    def _probe(self, phase: str):
        def hook(module, args):
            self.seen.setdefault(phase, []).append(self.on())

        return hook

    def reset(self) -> None:
        self.seen.clear()
