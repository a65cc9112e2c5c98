"""Loading the pipelines of a model under a memory profile.

One loading path for published checkpoints and the tiny offline models: ``from_pretrained`` with a
``PipelineQuantizationConfig`` (bitsandbytes 8-bit / nf4 text encoder, optionally the transformer), fp8 layerwise
casting, and the profile's offload. The 20B family builds its edit pipeline from the generate pipeline's text encoder
and VAE (one copy of each in memory) plus the Edit checkpoint's transformer, loaded when first needed.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import speed
from .offload import place_pipeline, remove_transformer_hooks
from .profiles import Profile
from .registry import TINY_ARCH, ModelSpec

log = logging.getLogger(__name__)

# bitsandbytes logs this on every 8-bit matmul of a float32 input (the CPU profile)
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated.*")

# from_pretrained creates modules under process-wide patches (empty/meta-device init): two loads running at once in
# one process (two engines, or a lazy edit transformer while another engine loads) turn each other's weights into
# meta tensors. Loads and tiny-model builds take this lock.
_LOAD_LOCK = threading.RLock()

# The text encoders' vision tower (Qwen2.5-VL and Qwen3-VL in transformers 5) and whether the 8-bit / nf4 text
# encoder quantizes it too, decided on bench/text_encoder_vision.py's figures (README, Performance): it stays in bf16.
# Quantized, it doubles the reference images' embedding error in 8 bits (Qwen3-VL 2.9% -> 5.9%, Qwen2.5-VL 3.5% ->
# 8.4%) and nearly triples it in nf4 (20% -> 58%, 23% -> 58%), to save 0.5-0.6 GiB (8-bit) / 0.8-0.9 GiB (nf4)
# while encoding, which every profile has room for.
VISION_TOWER = "model.visual"
QUANTIZE_VISION_TOWER = {"int8": False, "nf4": False}
# nf4 with its per-block scales quantized too (QLoRA's double quantization): 0.4 bits less per weight, 0.35 GiB on
# the 8 GB profile's text encoder, which pays for its bf16 vision tower there
NF4_DOUBLE_QUANT = True


@dataclass(frozen=True)
class LoadOptions:
    attention_backend: str | None = None  # e.g. "flash", "_native_cudnn", "sage"; None keeps diffusers' default
    compile_blocks: bool = False  # regional torch.compile of the repeated transformer blocks (qwen_image.speed)
    compile_backend: str = "inductor"  # torch.compile backend ("eager": dynamo tracing only, as the tests use)
    cache_dir: str | None = None  # tiny model cache folder
    keep_both_transformers: bool | None = None  # 20B family: None decides from system RAM
    device: str = "cuda"  # where a CUDA profile runs the weights; tests use "cpu:0" (qwen_image.offload)


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def checkpoint_sources(spec: ModelSpec, cache_dir: str | None = None) -> tuple[str, str]:
    """(generate source, edit source): Hub ids or local folders; tiny models are built on first use."""
    if spec.tiny:
        from .tiny import ensure_tiny

        with _LOAD_LOCK:
            root = ensure_tiny(TINY_ARCH[spec.family], Path(cache_dir) if cache_dir else None)
        if spec.one_pipeline:
            return str(root), str(root)
        return str(root / "generate"), str(root / "edit")
    return spec.generate_checkpoint, spec.edit_checkpoint


def text_encoder_quantization(precision: str, dtype, quantize_vision: bool | None = None):
    """transformers' BitsAndBytesConfig for the text encoder at ``precision`` ("int8", "nf4"; else None).

    The vocabulary projection is never quantized (the app drops it); the vision tower is quantized as
    QUANTIZE_VISION_TOWER says for the precision, or as ``quantize_vision`` says.
    """
    import transformers

    if quantize_vision is None:
        quantize_vision = QUANTIZE_VISION_TOWER.get(precision, True)
    skip = ["lm_head"] if quantize_vision else ["lm_head", VISION_TOWER]
    if precision == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    if precision == "nf4":
        return transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=NF4_DOUBLE_QUANT,
            llm_int8_skip_modules=skip,
        )
    return None


def transformer_quantization(profile: Profile):
    import diffusers

    dtype = torch_dtype(profile.dtype)
    if profile.transformer == "int8":
        return diffusers.BitsAndBytesConfig(load_in_8bit=True)
    if profile.transformer == "nf4":
        return diffusers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=NF4_DOUBLE_QUANT,
        )
    return None


def drop_lm_head(text_encoder) -> None:
    """The pipelines read hidden states only; the vocabulary projection (0.5-0.6 B parameters) is never used."""
    import torch

    if hasattr(text_encoder, "lm_head") and not isinstance(text_encoder.lm_head, torch.nn.Identity):
        text_encoder.lm_head = torch.nn.Identity()


def apply_lora(pipe, lora: dict | None, scheduler: dict | None = None) -> None:
    """Load a LoRA (e.g. Lightning) into the pipeline's transformer and fuse it, before any casting/offloading.

    ``lora`` is {"repo": Hub id or folder, "weight_name": file}; ``scheduler`` overrides the scheduler config (the
    Lightning LoRAs are trained for a fixed shift).
    """
    if lora and not getattr(pipe.transformer, "_qic_streamed", False):  # streamed fp8 loads fuse while loading
        quantized = getattr(pipe.transformer, "is_quantized", False)
        pipe.load_lora_weights(lora["repo"], weight_name=lora.get("weight_name"), adapter_name="preset")
        if not quantized:  # fused into plain weights; bitsandbytes weights keep the adapter active instead
            pipe.fuse_lora(lora_scale=float(lora.get("scale", 1.0)))
            pipe.unload_lora_weights()
    if scheduler:
        pipe.scheduler = type(pipe.scheduler).from_config({**pipe.scheduler.config, **scheduler})


def prepare_transformer(transformer, profile: Profile, options: LoadOptions) -> None:
    import torch

    if profile.transformer == "fp8" and not getattr(transformer, "_qic_streamed", False):
        transformer.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=torch_dtype(profile.dtype)
        )
    if options.attention_backend:
        speed.set_attention_backend(transformer, options.attention_backend)
        log.info("attention backend: %s", speed.covers(options.attention_backend))
    if options.compile_blocks:
        fullgraph = speed.compile_transformer(transformer, profile, options.compile_backend)
        log.info("compiling the transformer blocks %s", "as full graphs" if fullgraph else "with graph breaks at hooks")


@dataclass
class LoadedModel:
    """The pipelines of one model, placed on the device according to the profile."""

    spec: ModelSpec
    profile: Profile
    options: LoadOptions
    generate: object
    sources: dict  # role -> checkpoint
    tokenizer: object
    device: str
    _edit: object = None
    _active: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pipeline(self, role: str):
        """The pipeline for "generate" or "edit", ready to run on the device."""
        with self._lock:
            if self.spec.one_pipeline:
                if self._active is None:
                    self._place(self.generate, role)
                return self.generate
            if role == "edit" and self._edit is None:
                self._edit = build_edit_pipeline(
                    self.generate, self.spec, self.sources["edit"], self.profile, self.options
                )
            pipe = self.generate if role == "generate" else self._edit
            if self._active != role:
                self._switch(role, pipe)
            return pipe

    def pipelines(self) -> list:
        """The pipelines built so far (the 20B edit pipeline is built on first use)."""
        return [pipe for pipe in (self.generate, self._edit) if pipe is not None]

    def _switch(self, role: str, pipe) -> None:
        """Make ``pipe`` the active one; the other pipeline's transformer leaves the GPU (and RAM if it must)."""
        other = self._edit if role == "generate" else self.generate
        if other is not None and self._active is not None:
            remove_transformer_hooks(other)  # only its own: the text encoder and the VAE are shared
            if other.transformer is not None and self.profile.device == "cuda" and self.profile.offload == "none":
                other.transformer.to("cpu")
            if not self._keep_both() and other.transformer is not None:
                other.register_modules(transformer=None)
                _free_memory()
        if pipe.transformer is None:
            lora = self.spec.lora_edit if role == "edit" else self.spec.lora_generate
            pipe.register_modules(transformer=load_transformer(self.sources[role], self.profile, lora))
            apply_lora(pipe, lora)
            prepare_transformer(pipe.transformer, self.profile, self.options)
        self._place(pipe, role)

    def _keep_both(self) -> bool:
        keep = self.options.keep_both_transformers
        return True if keep is None else keep

    def _place(self, pipe, role: str) -> None:
        place_pipeline(pipe, self.profile, self.options.device)
        self._active = role


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def local_snapshot(source: str, *subfolders: str) -> str:
    """A Hub id as its local snapshot folder (fetching only ``subfolders`` when online), a folder as itself.

    Component-level ``from_pretrained`` of a sharded checkpoint asks the Hub API for the repo's files, which fails
    offline even when the cache holds them (the pipeline-level loader resolves the snapshot first, like this).
    """
    if Path(source).is_dir():
        return source
    from huggingface_hub import snapshot_download

    return snapshot_download(source, allow_patterns=[f"{sub}/*" for sub in subfolders])


def load_transformer(source: str, profile: Profile, lora: dict | None = None):
    """A 20B-family transformer from a checkpoint, quantized as the profile says (cast later, after any LoRA).

    fp8 profiles stream it into fp8 with the LoRA fused on the way (qwen_image.fp8_load): no full-precision copy.
    """
    import diffusers

    if profile.transformer == "fp8":
        return _streamed_fp8("qwen-image", source, profile, lora)
    source = local_snapshot(source, "transformer")
    with _LOAD_LOCK:
        transformer = diffusers.QwenImageTransformer2DModel.from_pretrained(
            source,
            subfolder="transformer",
            dtype=torch_dtype(profile.dtype),
            quantization_config=transformer_quantization(profile),
        )
    return transformer


TRANSFORMER_CLASSES = {
    "qwen-image-2.1": ("QwenImage21Transformer2DModel", "QwenImage21Pipeline"),
    "qwen-image": ("QwenImageTransformer2DModel", "QwenImagePipeline"),
}


def _streamed_fp8(family: str, source: str, profile: Profile, lora: dict | None):
    import diffusers

    from .fp8_load import load_fp8_transformer

    model_cls, pipe_cls = (getattr(diffusers, name) for name in TRANSFORMER_CLASSES[family])
    with _LOAD_LOCK:
        folder = local_snapshot(source, "transformer")
        return load_fp8_transformer(model_cls, folder, torch_dtype(profile.dtype), lora, pipe_cls)


def build_edit_pipeline(gen, spec: ModelSpec, edit_source: str, profile: Profile, options: LoadOptions):
    """QwenImageEditPlusPipeline sharing the generate pipeline's text encoder, tokenizer and VAE."""
    import diffusers
    from transformers import Qwen2VLProcessor

    edit_source = local_snapshot(edit_source, "transformer", "processor", "scheduler")
    transformer = load_transformer(edit_source, profile, spec.lora_edit)
    processor = Qwen2VLProcessor.from_pretrained(edit_source, subfolder="processor")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(edit_source, subfolder="scheduler")
    pipe = diffusers.QwenImageEditPlusPipeline(
        scheduler=scheduler,
        vae=gen.vae,
        text_encoder=gen.text_encoder,
        tokenizer=gen.tokenizer,
        processor=processor,
        transformer=transformer,
    )
    apply_lora(pipe, spec.lora_edit, spec.scheduler)
    prepare_transformer(pipe.transformer, profile, options)
    return pipe


def quiet_progress_bars() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def load_model(spec: ModelSpec, profile: Profile, options: LoadOptions | None = None) -> LoadedModel:
    """Load the generate pipeline (and, for 2.1, the one pipeline that also edits)."""
    import diffusers
    from diffusers.quantizers import PipelineQuantizationConfig

    from .headless import load_text_encoder

    quiet_progress_bars()
    options = options or LoadOptions()
    gen_src, edit_src = checkpoint_sources(spec, options.cache_dir)
    cls = getattr(diffusers, spec.generate_pipeline)
    components = {}
    if profile.transformer == "fp8":
        components["transformer"] = _streamed_fp8(spec.family, gen_src, profile, spec.lora_generate)
    dtype = torch_dtype(profile.dtype)
    transformer_q = transformer_quantization(profile)
    quantization = PipelineQuantizationConfig(quant_mapping={"transformer": transformer_q}) if transformer_q else None
    with _LOAD_LOCK:
        # without its vocabulary projection from the start (qwen_image.headless): never materialised at the load peak
        components["text_encoder"] = load_text_encoder(
            gen_src, dtype, text_encoder_quantization(profile.text_encoder, dtype)
        )
        pipe = cls.from_pretrained(gen_src, dtype=dtype, quantization_config=quantization, **components)
    apply_lora(pipe, spec.lora_generate, spec.scheduler)
    prepare_transformer(pipe.transformer, profile, options)
    tokenizer = pipe.processor.tokenizer if spec.one_pipeline else pipe.tokenizer
    loaded = LoadedModel(
        spec=spec,
        profile=profile,
        options=options,
        generate=pipe,
        sources={"generate": gen_src, "edit": edit_src},
        tokenizer=tokenizer,
        device=profile.device,
    )
    loaded.pipeline("generate")
    return loaded


def load_tokenizer(spec: ModelSpec, cache_dir: str | None = None):
    """Only the tokenizer (fast), so that prompts can be validated while the model loads.

    Both families ship a Qwen2Tokenizer. The class is named rather than AutoTokenizer, which also reads a
    ``config.json`` the tokenizer folders do not have: offline, from a cache made by ``hf download``, that fails.
    """
    from transformers import Qwen2Tokenizer

    gen_src, _ = checkpoint_sources(spec, cache_dir)
    subfolder = "processor" if spec.one_pipeline else "tokenizer"
    return Qwen2Tokenizer.from_pretrained(gen_src, subfolder=subfolder)
