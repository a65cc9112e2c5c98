"""The text encoder's vocabulary projection (``lm_head``), read from the checkpoint only when text is to be written.

The loader drops ``lm_head`` (the pipelines read hidden states only; it is 0.55-0.62 B parameters). The local prompt
enhancer needs it back: ``LmHead`` reads just that tensor from the text encoder's safetensors (through the index
json where the checkpoint is sharded), builds it in the text encoder's precision (8-bit, LLM.int8 through
bitsandbytes, where the text encoder is 8- or 4-bit; else the compute dtype), keeps it on the text encoder's device
until ``release()``. Its bytes are what the planner counts for the enhancer (``planner.lm_head_bytes``).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

from .base import EnhancerError

log = logging.getLogger(__name__)

KEY = "lm_head.weight"
KEYS = (KEY, "model.lm_head.weight", "language_model.lm_head.weight")  # the usual name first, then older layouts
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def checkpoint_file(source: str, relpath: str) -> Path | None:
    """A file of a checkpoint (a local folder or a Hub id, from the local cache when offline); None when absent."""
    root = Path(source)
    if root.is_dir():
        path = root / relpath
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, relpath))
    except Exception as exc:  # not in the repository, or offline and not cached
        log.info("no %s in %s: %s", relpath, source, exc)
        return None


def locate(source: str, subfolder: str = "text_encoder") -> tuple[Path, str] | None:
    """(safetensors file, tensor name) of the lm_head of ``source``'s text encoder; None when the checkpoint lacks it.
    A sharded checkpoint is looked up in its index json, so only the shard that holds it is opened."""
    index = checkpoint_file(source, f"{subfolder}/{INDEX}")
    if index is not None:
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        key = next((k for k in KEYS if k in weight_map), None)
        path = checkpoint_file(source, f"{subfolder}/{weight_map[key]}") if key else None
        return (path, key) if path else None
    single = checkpoint_file(source, f"{subfolder}/{SINGLE}")
    if single is None:
        return None
    from safetensors import safe_open

    with safe_open(single, "pt") as f:
        names = set(f.keys())
    key = next((k for k in KEYS if k in names), None)
    return (single, key) if key else None


def read_tensor(path: Path, key: str = KEY):
    """One tensor of a safetensors file (only its bytes are read)."""
    from safetensors import safe_open

    with safe_open(path, "pt", device="cpu") as f:
        return f.get_tensor(key)


def wants_int8(text_encoder_precision: str) -> bool:
    """An 8-bit lm_head beside an 8-bit or 4-bit text encoder (LLM.int8 keeps argmax decoding intact)."""
    return text_encoder_precision in ("int8", "nf4")


def build(weight, dtype, device, int8: bool):
    """A bias-free Linear with ``weight`` (vocab x hidden) on ``device``: LLM.int8 or in ``dtype``."""
    import torch

    out_features, in_features = weight.shape
    if int8:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
        return layer.to(device)  # quantized on the move
    layer = torch.nn.Linear(in_features, out_features, bias=False, device="meta")
    layer.weight = torch.nn.Parameter(weight.to(device=device, dtype=dtype), requires_grad=False)
    return layer


def module_bytes(layer) -> int:
    """Bytes the layer holds: its weights, plus LLM.int8's one float32 scale per output row."""
    total = sum(p.numel() * p.element_size() for p in layer.parameters())
    if getattr(layer.weight, "dtype", None) is not None and str(layer.weight.dtype) == "torch.int8":
        total += 4 * layer.weight.shape[0]
    return total


class LmHead:
    """The vocabulary projection of one text encoder: loaded on first ``module()``, dropped by ``release()``."""

    def __init__(self, source: str, precision: str, subfolder: str = "text_encoder"):
        self.source = source
        self.precision = precision  # the text encoder's: "full", "int8" or "nf4"
        self.subfolder = subfolder
        self._layer = None

    @property
    def loaded(self) -> bool:
        return self._layer is not None

    @property
    def nbytes(self) -> int:
        return 0 if self._layer is None else module_bytes(self._layer)

    def module(self, text_encoder, device):
        """The layer, ready on ``device`` (read from the checkpoint the first time). Raises EnhancerError when the
        checkpoint has no lm_head and the embeddings are not tied."""
        if self._layer is not None:
            return self._layer
        embeddings = text_encoder.get_input_embeddings().weight
        found = locate(self.source, self.subfolder)
        if found is None:
            if _tied(text_encoder):
                self._layer = build(embeddings.detach(), embeddings.dtype, device, False)
                return self._layer
            raise EnhancerError(
                "the text encoder's checkpoint has no lm_head (vocabulary projection), so it cannot write text; "
                "use an endpoint (--enhancer-url)"
            )
        path, key = found
        weight = read_tensor(path, key)
        if tuple(weight.shape) != (text_encoder.config.get_text_config().vocab_size, embeddings.shape[1]):
            raise EnhancerError(f"the checkpoint's lm_head has shape {tuple(weight.shape)}, not the text encoder's")
        self._layer = build(weight, embeddings.dtype, device, wants_int8(self.precision))
        del weight
        log.info("prompt enhancer: lm_head loaded from %s (%.2f GiB)", path, self.nbytes / 2**30)
        return self._layer

    def release(self) -> None:
        if self._layer is None:
            return
        self._layer = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _tied(text_encoder) -> bool:
    config = text_encoder.config
    return bool(getattr(config.get_text_config(), "tie_word_embeddings", False) or config.tie_word_embeddings)
