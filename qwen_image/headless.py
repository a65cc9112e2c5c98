"""Text encoders loaded without their vocabulary projection.

The pipelines read the text encoder's hidden states only; its ``lm_head`` (Qwen3-VL-8B: 151,936 x 4096 = 0.62 B
parameters, Qwen2.5-VL-7B: 0.54 B) is never used. Dropping it after ``from_pretrained`` still materialises it first,
in the load dtype: 2.3 GiB of float32 on the CPU profile (1.2 GiB of bf16 on a GPU) held at the load peak for
nothing, and time spent converting it. Here the model class is subclassed so that ``lm_head`` is an ``Identity``
from construction: ``from_pretrained`` never allocates or reads it (the checkpoint's ``lm_head.weight`` is an
expected leftover). Everything else loads exactly as through the pipeline (dtype, bitsandbytes quantization).
"""

from __future__ import annotations

from functools import cache


@cache
def headless_class(cls):
    """A subclass of a ``...ForConditionalGeneration`` text encoder whose ``lm_head`` is an ``Identity``."""
    import torch

    def __init__(self, config, *args, **kwargs):
        cls.__init__(self, config, *args, **kwargs)
        self.lm_head = torch.nn.Identity()

    return type(
        cls.__name__,  # saved configs and the pipeline's (library, class) record name the published class
        (cls,),
        {
            "__init__": __init__,
            "__module__": cls.__module__,
            "_keys_to_ignore_on_load_unexpected": [r"^lm_head\."],
            "_tied_weights_keys": {},
        },
    )


def text_encoder_class(source: str):
    """The transformers class the checkpoint's ``model_index.json`` names for its text encoder."""
    import transformers
    from diffusers import DiffusionPipeline

    library, name = DiffusionPipeline.load_config(source)["text_encoder"]
    if library != "transformers":
        raise ValueError(f"{source}: the text encoder is a {library}.{name}, not a transformers model")
    return getattr(transformers, name)


def load_text_encoder(source: str, dtype, quantization=None):
    """The checkpoint's text encoder in ``dtype`` (bitsandbytes ``quantization`` if given), without ``lm_head``."""
    cls = headless_class(text_encoder_class(source))
    kwargs = {"quantization_config": quantization} if quantization is not None else {}
    return cls.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kwargs)
