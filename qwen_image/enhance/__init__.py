"""Prompt enhancement: a short prompt becomes a detailed one (and an edit request a precise instruction).

``LocalEnhancer`` uses the text encoder already in memory (its ``lm_head`` loaded on first use); ``EndpointEnhancer``
any OpenAI-compatible chat-completions server (e.g. the official Qwen-Image-2.1-PE models on vLLM). Both return an
``Enhancement`` and fail harmlessly (the prompt unchanged, one line saying why). The instructions are data:
configs/enhancer.toml.
"""

from .base import (
    Enhancement,
    Enhancer,
    EnhancerConfig,
    EnhancerError,
    EnhanceTask,
    apply,
    edited,
    load_config,
    resolve_enhanced,
    task_for,
)

__all__ = [
    "EnhanceTask",
    "Enhancement",
    "Enhancer",
    "EnhancerConfig",
    "EnhancerError",
    "apply",
    "edited",
    "load_config",
    "resolve_enhanced",
    "task_for",
]
