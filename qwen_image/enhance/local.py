"""The local prompt enhancer: the text encoder already in memory writes the rewrite.

Both families' text encoders are vision-language chat models (Qwen3-VL-8B for 2.1, Qwen2.5-VL-7B for the 20B pair);
with their vocabulary projection back (``lm_head``, loaded on first use) they generate text. The rewrite runs under
the engine's one-GPU lock, with whatever offloading or quantization the memory profile gave the text encoder, decodes
greedily (or at a low temperature), stops after a bounded number of tokens or when ``cancel`` is set, and streams
what it has written. For an edit, the images being edited are shown to the model.
"""

from __future__ import annotations

import threading

from ..backend import Cancelled
from .base import Enhancer, EnhancerConfig, EnhanceTask, OnText
from .lm_head import LmHead

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def chat_text(system: str, prompt: str, images: int) -> str:
    """The conversation in Qwen's chat format (the same for Qwen2.5-VL and Qwen3-VL), ready for the answer."""
    pictures = "".join(f"<image{i}>: {IMAGE}\n" for i in range(1, images + 1))
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{pictures}{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def fit(image, max_pixels: int):
    """An RGB copy of ``image`` with at most ``max_pixels`` pixels (the same shape)."""
    from PIL import Image

    from ..images import settle_alpha

    image = settle_alpha(image.convert("RGBA"), keep_alpha=False).convert("RGB")  # transparency onto white
    w, h = image.size
    if w * h > max_pixels:
        scale = (max_pixels / (w * h)) ** 0.5
        image = image.resize((max(28, round(w * scale)), max(28, round(h * scale))), Image.Resampling.LANCZOS)
    return image


class LocalEnhancer(Enhancer):
    """Rewrites with the engine's own text encoder (``engine``: a ``qwen_image.engine.Engine``)."""

    def __init__(self, engine, config: EnhancerConfig | None = None):
        super().__init__(config)
        self.engine = engine
        self.name = f"{engine.spec.key} text encoder (local)"
        self._head: LmHead | None = None
        self._processors: dict = {}
        self._lock = threading.Lock()  # one rewrite at a time; release() waits for it

    @property
    def lm_head_bytes(self) -> int:
        """Bytes of the vocabulary projection while it is loaded (0 otherwise)."""
        return 0 if self._head is None else self._head.nbytes

    def release(self) -> None:
        """Drop the vocabulary projection (it is read from the checkpoint again on the next rewrite)."""
        with self._lock:
            if self._head is not None:
                self._head.release()

    def _processor(self, loaded, images: bool):
        """The tokenizer (text only) or processor (with images) that belongs to the text encoder."""
        if loaded.spec.one_pipeline:
            return loaded.generate.processor
        if not images:
            return loaded.tokenizer
        if "edit" not in self._processors:  # the 20B generate checkpoint has no image processor; Edit's has
            from transformers import Qwen2VLProcessor

            self._processors["edit"] = Qwen2VLProcessor.from_pretrained(loaded.sources["edit"], subfolder="processor")
        return self._processors["edit"]

    def _generate(self, task: EnhanceTask, report: OnText, cancel: threading.Event | None) -> tuple[str, int]:
        settings = self.config.local
        with self.engine.exclusive(cancel) as loaded, self._lock:
            # imported once the model is loaded: transformers' lazy imports are not safe beside a loading thread
            import torch
            from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
            from transformers.generation.streamers import BaseStreamer

            text_encoder = loaded.generate.text_encoder
            device = loaded.generate._execution_device
            if self._head is None:
                self._head = LmHead(loaded.sources["generate"], loaded.profile.text_encoder)
            head = self._head.module(text_encoder, device)
            processor = self._processor(loaded, bool(task.images))
            tokenizer = getattr(processor, "tokenizer", processor)
            text = chat_text(self.config.system_prompt(task), task.prompt, len(task.images))
            images = [fit(img, settings.image_max_pixels) for img in task.images]
            if images:
                inputs = processor(text=[text], images=images, return_tensors="pt")
            else:
                inputs = processor(text=[text], return_tensors="pt")
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
            prompt_len = inputs["input_ids"].shape[1]

            class Stream(BaseStreamer):
                def __init__(self):
                    self.ids: list[int] = []
                    self.prompt_seen = False

                def put(self, value):
                    if not self.prompt_seen:  # the first call carries the prompt
                        self.prompt_seen = True
                        return
                    self.ids.extend(value.reshape(-1).tolist())
                    report(tokenizer.decode(self.ids, skip_special_tokens=True))

                def end(self):
                    pass

            class Stop(StoppingCriteria):
                def __call__(self, input_ids, scores, **kwargs):
                    stop = cancel is not None and cancel.is_set()
                    return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

            stops = [i for i in (tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS) if isinstance(i, int)]
            sample = settings.temperature > 0
            generation = GenerationConfig(
                max_new_tokens=settings.max_new_tokens,
                do_sample=sample,
                temperature=settings.temperature if sample else None,
                top_p=settings.top_p if sample else None,
                top_k=None,
                repetition_penalty=settings.repetition_penalty,
                eos_token_id=stops,
                pad_token_id=stops[-1] if stops else None,
            )
            text_encoder.lm_head = head
            try:
                with torch.inference_mode():
                    out = text_encoder.generate(
                        **inputs,
                        generation_config=generation,
                        streamer=Stream(),
                        stopping_criteria=StoppingCriteriaList([Stop()]),
                    )
            finally:
                text_encoder.lm_head = torch.nn.Identity()  # the pipelines read hidden states, never logits
                # it stays on the device only beside a text encoder that stays there (planner.lm_head_resident)
                if not settings.keep_loaded or loaded.profile.offload != "none":
                    self._head.release()
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        new = out[0, prompt_len:]
        return tokenizer.decode(new, skip_special_tokens=True), int(new.shape[0])
