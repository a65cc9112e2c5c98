"""The opt-in speed switches: regional torch.compile (``--compile``) and the attention backend
(``--attention-backend``), and where each of them applies.

Compile: ``compile_repeated_blocks(fullgraph=True)`` needs blocks that dynamo can trace in one graph. fp8 layerwise
casting (a diffusers hook on every Linear: dynamo refuses its ``nn.Parameter`` construction inside a full graph),
block streaming (diffusers' group-offload hooks are compiler-disabled) and sequential offload (accelerate's hooks
on every submodule) are not; bitsandbytes layers are not guaranteed either. Those profiles compile without
``fullgraph``: dynamo breaks the graph at every hook and compiles what lies between.

Attention: ``transformer.set_attention_backend`` sets the backend of every attention processor (the 20B
transformer's every call; Qwen-Image-2.1's KV-cached steps) and, in diffusers 0.42, also makes it the process-wide
*active* backend, which 2.1's block-causal prefill (the first step, and every step when the cache is off) calls with
boolean masks. Mask-less kernels (flash, sage, ...) raise on a mask, so the first step of every 2.1 job failed; the
varlen ones reduce a mask to key padding, which silently drops the causal part. So the active backend is put back
right after ``set_attention_backend`` and switched only for the duration of a pipeline call, and only to a backend
that computes arbitrary masks exactly; with any other the prefill keeps diffusers' default (PyTorch SDPA).
"""

from __future__ import annotations

import contextlib

from .profiles import Profile

# diffusers backends that take an arbitrary boolean attention mask and apply it exactly
MASK_EXACT_BACKENDS = frozenset({"native", "_native_efficient", "_native_math", "xformers"})

# --help of the app and the CLI
ATTENTION_HELP = (
    "diffusers attention backend for the transformer (e.g. flash, sage, _native_cudnn; default: PyTorch SDPA). "
    "native, _native_efficient, _native_math and xformers run every attention call; any other runs every call of the "
    "20B transformer and Qwen-Image-2.1's KV-cached steps, while 2.1's masked first step (every step with the KV "
    "cache off) keeps SDPA. The text encoder is not affected."
)
COMPILE_HELP = (
    "regional torch.compile of the transformer blocks (first job slower). Full graphs with a bf16 transformer and no "
    "or model offload (48gb; 24gb for 2.1); with fp8 or block streaming (16gb, 12gb, 8gb; 24gb for the 20B model) "
    "dynamo breaks the graph at every casting/offload hook and compiles what lies between, which may gain little."
)


def compile_fullgraph(profile: Profile) -> bool:
    """Whether the transformer's repeated blocks compile as one graph each under this profile."""
    return profile.transformer == "full" and profile.offload in ("none", "model")


def compile_transformer(transformer, profile: Profile, backend: str = "inductor") -> bool:
    """Regional compile of the repeated blocks; returns whether it is a full graph."""
    fullgraph = compile_fullgraph(profile)
    transformer.compile_repeated_blocks(fullgraph=fullgraph, backend=backend)
    return fullgraph


def set_attention_backend(transformer, backend: str) -> None:
    """The processors' backend, without changing diffusers' process-wide active backend."""
    from diffusers.models.attention_dispatch import AttentionBackendName, attention_backend

    with attention_backend(AttentionBackendName.NATIVE):  # restores the active backend on exit
        transformer.set_attention_backend(backend)


def attention_scope(backend: str | None):
    """Context for one pipeline call: ``backend`` also for the attention calls the model leaves to the default."""
    if not backend or backend not in MASK_EXACT_BACKENDS:
        return contextlib.nullcontext()
    from diffusers.models.attention_dispatch import attention_backend

    return attention_backend(backend)


def covers(backend: str | None) -> str:
    """What ``--attention-backend`` covers, in words (for logs and --help)."""
    if not backend:
        return "diffusers' default attention everywhere"
    if backend in MASK_EXACT_BACKENDS:
        return f"{backend} for every transformer attention call"
    return (
        f"{backend} for every 20B transformer call and 2.1's KV-cached steps; 2.1's masked prefill (its first step, "
        "every step with the KV cache off) keeps PyTorch SDPA"
    )
