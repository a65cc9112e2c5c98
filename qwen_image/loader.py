"""Loading the pipelines of a model under a memory profile.

One loading path for published checkpoints and the tiny offline models: ``from_pretrained`` with a
``PipelineQuantizationConfig`` (bitsandbytes 8-bit / nf4 text encoder, optionally the transformer), fp8 layerwise
casting, and the profile's offload. The 20B family builds its edit pipeline from the generate pipeline's text encoder
and VAE (one copy of each in memory) plus the Edit checkpoint's transformer, loaded when first needed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class LoadOptions:
    attention_backend: str | None = None  # e.g. "flash", "_native_cudnn", "sage"; None keeps diffusers' default
    compile_blocks: bool = False  # regional torch.compile of the repeated transformer blocks
    cache_dir: str | None = None  # tiny model cache folder
    keep_both_transformers: bool | None = None  # 20B family: None decides from system RAM


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


def quantization_config(profile: Profile):
    """The PipelineQuantizationConfig for a profile, or None."""
    from diffusers.quantizers import PipelineQuantizationConfig

    mapping = {}
    text_encoder_q = text_encoder_quantization(profile)
    if text_encoder_q is not None:
        mapping["text_encoder"] = text_encoder_q
    transformer_q = transformer_quantization(profile)
    if transformer_q is not None:
        mapping["transformer"] = transformer_q
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def text_encoder_quantization(profile: Profile):
    import transformers

    if profile.text_encoder == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    if profile.text_encoder == "nf4":
        return transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(profile.dtype)
        )
    return None


def transformer_quantization(profile: Profile):
    import diffusers

    dtype = torch_dtype(profile.dtype)
    if profile.transformer == "int8":
        return diffusers.BitsAndBytesConfig(load_in_8bit=True)
    if profile.transformer == "nf4":
        return diffusers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
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
        transformer.set_attention_backend(options.attention_backend)
    if options.compile_blocks:
        transformer.compile_repeated_blocks(fullgraph=True)


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
    _te_hook: object = None
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
            _remove_hooks(other)
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
        place_pipeline(pipe, self.profile, self)
        self._active = role


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _remove_hooks(pipe) -> None:
    with contextlib.suppress(Exception):
        pipe.remove_all_hooks()


def place_pipeline(pipe, profile: Profile, loaded: LoadedModel | None = None) -> None:
    """Move a pipeline to the device or install the profile's offloading."""
    pipe.set_progress_bar_config(disable=True)
    if profile.device == "cpu":
        pipe.to("cpu")
        return
    if profile.offload == "none":
        pipe.to("cuda")
    elif profile.offload == "model":
        pipe.enable_model_cpu_offload(device="cuda")
    elif profile.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device="cuda")
    elif profile.offload == "group":
        _group_offload(pipe, profile, loaded)


def _group_offload(pipe, profile: Profile, loaded: LoadedModel | None) -> None:
    """Transformer blocks streamed on a CUDA stream; text encoder on the GPU only while encoding; VAE resident."""
    import torch
    from accelerate import cpu_offload_with_hook
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    cuda = torch.device("cuda")
    if not _is_group_offload_enabled(pipe.transformer):
        pipe.transformer.enable_group_offload(
            onload_device=cuda,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=profile.group_blocks,
            use_stream=True,
            low_cpu_mem_usage=False,
        )
    pipe.vae.to(cuda)
    te_hook = loaded._te_hook if loaded is not None else None
    if te_hook is None:
        _, te_hook = cpu_offload_with_hook(pipe.text_encoder, execution_device=cuda)
        if loaded is not None:
            loaded._te_hook = te_hook
    if not getattr(pipe.transformer, "_qic_te_offload", False):
        pipe.transformer.register_forward_pre_hook(lambda module, args: te_hook.offload())
        pipe.transformer._qic_te_offload = True


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
        return load_fp8_transformer(model_cls, source, torch_dtype(profile.dtype), lora, pipe_cls)


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
        components["text_encoder"] = load_text_encoder(gen_src, dtype, text_encoder_quantization(profile))
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
