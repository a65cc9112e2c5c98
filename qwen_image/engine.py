"""The engine: loads a model in the background and runs one generation at a time, with progress and cancel.

Nothing heavy happens at import or construction; ``start()`` loads in a thread and ``status`` says where it is.
``generate(request, on_progress, cancel)`` validates, waits for the model, runs the pipeline with a step callback
(progress every denoising step, cancel within one step through the pipeline's ``interrupt``), decodes, and returns a
``GenerationResult``. A CUDA out-of-memory error is retried once with lower-memory settings. It implements
``qwen_image.backend.Backend``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import decode as dec
from . import offload
from .backend import (
    BackendError,
    BackendStatus,
    Cancelled,
    Capabilities,
    Progress,
    estimated_seconds,
    safe_progress,
)
from .embed_cache import EmbedCache
from .generation import (
    GenerationRequest,
    GenerationResult,
    ResolvedRequest,
    ValidationError,
    model_prompt,
    resolve,
)
from .hardware import Hardware
from .loader import LoadedModel, LoadOptions, load_model, load_tokenizer
from .planner import Workload, predict
from .preview import latent_preview, preview_steps
from .profiles import Profile
from .registry import ModelSpec
from .schedule import one_step_safe
from .speed import attention_scope

log = logging.getLogger(__name__)


class EngineError(BackendError):
    """A failure of the in-process engine to show the user (model failed to load, out of memory after retrying,
    invalid output)."""


@dataclass(frozen=True)
class RunSettings:
    """Memory-relevant switches of one attempt; ``lower()`` is the retry after running out of memory."""

    vae_tiling: bool
    vae_slicing: bool
    kv_cache: bool

    def lower(self) -> RunSettings:
        return replace(self, vae_tiling=True, vae_slicing=True, kv_cache=False)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Engine:
    def __init__(
        self,
        spec: ModelSpec,
        profile: Profile | None,
        hardware: Hardware | None,
        options: LoadOptions | None = None,
        vram_budget_gb: float | None = None,
        configure: Callable[[], tuple] | None = None,
    ):
        """``configure`` (optional) runs first in the loading thread and returns (profile, hardware, options,
        vram_budget_gb): the app serves its page while the hardware is probed and the profile is chosen."""
        if profile is None and configure is None:
            raise ValueError("an engine needs a profile or a way to choose one")
        self._configure = configure
        self.spec = spec
        self.profile = profile
        self.hardware = hardware
        self.options = options or LoadOptions()
        self.vram_budget_gb = vram_budget_gb
        self.embed_cache = EmbedCache()
        self._loaded: LoadedModel | None = None
        self._tokenizer = None
        self._state = "idle"
        self._message = "not loaded yet"
        self._state_lock = threading.Lock()
        self._ready = threading.Event()
        self._tokenizer_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._job_lock = threading.Lock()
        self._last_decode_s = 0.0
        self.step_delay = 0.0  # seconds added after each denoising step (slow motion for demos and tests)

    # -- status and loading ---------------------------------------------------------------------------------------
    @property
    def status(self) -> BackendStatus:
        return BackendStatus(
            state=self._state,
            message=self._message,
            model=self.spec.key,
            model_label=self.spec.label,
            profile=self.profile.name if self.profile else "",
            device=self.profile.device if self.profile else "",
            demo=self.spec.tiny,
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_references=self.spec.max_references,
            transparent=self.spec.transparent,
            step_progress=True,
            live_preview=True,
        )

    def estimate_seconds(self, request: ResolvedRequest) -> float:
        return estimated_seconds(self.spec, request)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, hardware: Hardware, vram_budget_gb: float | None = None) -> Engine:
        """An engine serving a model already in memory (benchmarks assemble their own pipelines)."""
        engine = cls(loaded.spec, loaded.profile, hardware, loaded.options, vram_budget_gb)
        engine._loaded, engine._tokenizer = loaded, loaded.tokenizer
        engine._set("ready", f"{loaded.spec.label} ready ({loaded.profile.summary()})")
        engine._tokenizer_ready.set()
        engine._ready.set()
        return engine

    def _set(self, state: str, message: str) -> None:
        with self._state_lock:
            self._state, self._message = state, message
        log.info("engine %s: %s", state, message)

    def start(self) -> None:
        """Load the model in a background thread (once)."""
        with self._state_lock:
            if self._thread is not None or self._ready.is_set():
                return
            self._thread = threading.Thread(target=self._load, name="engine-load", daemon=True)
            self._state, self._message = "loading", f"loading {self.spec.label}"
        self._thread.start()

    def _load(self) -> None:
        t0 = time.monotonic()
        try:
            if self._configure is not None:
                self.profile, self.hardware, self.options, self.vram_budget_gb = self._configure()
            self._tokenizer = load_tokenizer(self.spec, self.options.cache_dir)
            self._tokenizer_ready.set()
            self._set("loading", f"loading {self.spec.label} ({self.profile.summary()})")
            self._loaded = load_model(self.spec, self.profile, self.options)
            self._tokenizer = self._loaded.tokenizer
            self._set("ready", f"{self.spec.label} ready in {time.monotonic() - t0:.1f} s ({self.profile.summary()})")
        except Exception as exc:  # shown in the UI; the server keeps serving
            log.exception("model failed to load")
            self._set("error", f"{self.spec.label} failed to load: {type(exc).__name__}: {exc}")
        finally:
            self._tokenizer_ready.set()
            self._ready.set()

    def wait_ready(self, timeout: float | None = None, cancel=None) -> None:
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if deadline is not None and time.monotonic() > deadline:
                raise EngineError("the model is still loading; try again in a moment")
        if self._state == "error":
            raise EngineError(self._message)

    def _wait_tokenizer(self) -> None:
        """Prompts can be checked as soon as the tokenizer is in, before the model finishes loading."""
        self.start()
        self._tokenizer_ready.wait()
        if self._tokenizer is None:
            raise EngineError(self._message)

    def count_tokens(self, text: str) -> int:
        self._wait_tokenizer()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- jobs -------------------------------------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Validate a request (raises ValidationError); needs the tokenizer, which loads first."""
        self._wait_tokenizer()
        return resolve(request, self.spec, self.count_tokens)

    def plan_for(self, r: ResolvedRequest) -> bool:
        """Whether the VAE should tile for this request (profile policy + planner)."""
        if self.profile.vae_tiling != "auto":
            return self.profile.vae_tiling == "on"
        budget = self.vram_budget_gb
        if budget is None:
            budget = self.hardware.vram_free_gb if self.profile.device == "cuda" else self.hardware.ram_available_gb
        workload = Workload(
            width=r.width,
            height=r.height,
            references=len(r.images),
            reference_resolution=r.reference_resolution,
            prompt_tokens=self.count_tokens(r.prompt),
            num_images=r.num_images,
            cfg=r.uses_cfg,
            kv_cache=self.spec.kv_cache,
        )
        return predict(self.spec, self.profile, workload, budget_gb=budget).vae_tiling

    def generate(
        self,
        request: GenerationRequest | ResolvedRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel=None,
    ) -> GenerationResult:
        """Run one job. Raises ValidationError, Cancelled or EngineError."""
        report = safe_progress(on_progress)
        r = request if isinstance(request, ResolvedRequest) else self.resolve(request)
        if r.model != self.spec.key:
            raise ValidationError(f"this request was made for {r.model}, but {self.spec.key} is loaded")
        if not self._ready.is_set():
            report(Progress("loading", message=self._message))
        self.wait_ready(cancel=cancel)
        self._acquire(report, cancel)
        try:
            return self._run(r, report, cancel)
        finally:
            self._job_lock.release()

    def _acquire(self, report, cancel) -> None:
        """Take the one-job-at-a-time lock (one GPU), saying once that we wait; Cancelled when ``cancel`` is set."""
        waited = False
        while not self._job_lock.acquire(timeout=0.1):
            if not waited:
                report(Progress("waiting", message="waiting for the GPU"))
                waited = True
            if cancel is not None and cancel.is_set():
                raise Cancelled()

    @contextlib.contextmanager
    def exclusive(self, cancel=None, on_progress: Callable[[Progress], None] | None = None):
        """Hold the GPU, with the model ready, for work beside image generation (the local prompt enhancer): yields
        the ``LoadedModel``. Raises EngineError when the model cannot load, Cancelled when ``cancel`` is set."""
        self.wait_ready(cancel=cancel)
        self._acquire(safe_progress(on_progress), cancel)
        try:
            yield self._loaded
        finally:
            self._job_lock.release()

    def _run(self, r: ResolvedRequest, report, cancel) -> GenerationResult:
        settings = RunSettings(
            vae_tiling=self.plan_for(r), vae_slicing=self.profile.vae_slicing, kv_cache=self.spec.kv_cache
        )
        notes: list[str] = []
        for attempt in (0, 1):
            failure = None
            try:
                return self._run_once(r, settings, report, cancel, notes)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                failure = exc
            self._recover_memory()  # outside the except block, so the traceback's frames can be freed
            if attempt == 1:
                raise EngineError(
                    "Out of GPU memory even with VAE tiling on and the KV cache off. Try a smaller size, fewer images "
                    "or references, or a lower memory profile (--profile)."
                ) from failure
            lowered = settings.lower()
            notes.append(
                "Ran out of GPU memory; retried with "
                + ", ".join(
                    name
                    for name, before, after in (
                        ("VAE tiling on", settings.vae_tiling, lowered.vae_tiling),
                        ("VAE slicing on", settings.vae_slicing, lowered.vae_slicing),
                        ("the prefix KV cache off", settings.kv_cache, lowered.kv_cache),
                    )
                    if before != after
                )
                + "."
            )
            settings = lowered
        raise AssertionError("unreachable")

    def _recover_memory(self) -> None:
        import gc

        import torch

        pipes = [] if self._loaded is None else self._loaded.pipelines()
        for pipe in pipes:
            if self.profile.offload == "model":
                try:
                    pipe.maybe_free_model_hooks()
                except Exception:
                    log.exception("could not reset offload hooks")
            offload.offload_text_encoder(pipe)  # a cached prompt embedding means the encoder will not run again
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _run_once(self, r: ResolvedRequest, settings: RunSettings, report, cancel, notes: list) -> GenerationResult:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        role = "edit" if r.images else "generate"
        pipe = self._loaded.pipeline(role)
        self.embed_cache.wrap(pipe, role)
        hits_before, misses_before = self.embed_cache.hits, self.embed_cache.misses
        dec.set_tiling(pipe.vae, settings.vae_tiling, self.spec.family)
        dec.set_slicing(pipe.vae, settings.vae_slicing and r.num_images > 1)

        t0 = time.monotonic()
        marks: dict[str, float] = {}
        total = r.steps
        report(Progress("encoding", 0, total, 0.0, None, "reading the prompt"))
        previews = preview_steps(total)

        def first_call(module, args):
            marks.setdefault("denoise", time.monotonic())

        def on_step(p, i, t, kwargs):
            if self.step_delay:
                time.sleep(self.step_delay)
            now = time.monotonic()
            marks["last_step"] = now
            if cancel is not None and cancel.is_set():
                p._interrupt = True  # the pipeline's own stop flag ...
                raise Cancelled()  # ... and skip decoding a half-denoised latent
            start = marks.get("denoise", t0)
            done = i + 1
            per_step = (now - start) / done
            eta = per_step * (total - done) + self._last_decode_s
            shown = _preview(kwargs.get("latents"), r) if done in previews else None
            report(Progress("denoising", done, total, now - t0, eta, f"step {done}/{total}", shown))
            return {}

        hook = pipe.transformer.register_forward_pre_hook(first_call)
        try:
            kwargs = self._call_kwargs(r, pipe, settings, on_step)
            with (
                _reference_area(self.spec, r.reference_resolution),
                attention_scope(self.options.attention_backend),
                one_step_safe(pipe, r.steps),
            ):
                latents = pipe(**kwargs).images
        except Cancelled:
            self._recover_memory()
            raise
        finally:
            hook.remove()
        if cancel is not None and cancel.is_set():
            raise Cancelled()

        t_dec = time.monotonic()
        report(Progress("decoding", total, total, t_dec - t0, self._last_decode_s, "decoding the image"))
        try:
            decoded = self._decode(pipe, latents, r, settings, notes)
        finally:
            offload.release_after_decode(pipe)
        t_end = time.monotonic()
        self._last_decode_s = t_end - t_dec
        images = tuple(dec.finish_image(img, r.transparent) for img in decoded.images)
        if decoded.redecoded_fp32:
            notes.append("The first decode gave an invalid image; it was decoded again in float32.")
        denoise_start = marks.get("denoise", t_dec)
        timings = {
            "encode": round(denoise_start - t0, 4),
            "denoise": round(marks.get("last_step", t_dec) - denoise_start, 4),
            "decode": round(t_end - t_dec, 4),
            "total": round(t_end - t0, 4),
        }
        report(Progress("done", total, total, t_end - t0, 0.0, "done"))
        return GenerationResult(
            images=images,
            seeds=r.seeds,
            request=r,
            timings=timings,
            notes=tuple(notes),
            # a hit only when the text encoder did not run at all (the 20B default negative prompt alone is no hit)
            embed_cache_hit=self.embed_cache.hits > hits_before and self.embed_cache.misses == misses_before,
        )

    def _decode(self, pipe, latents, r: ResolvedRequest, settings: RunSettings, notes: list):
        failure = None
        try:
            return dec.decode(pipe, latents, r.height, r.width)
        except FloatingPointError as exc:
            raise EngineError(f"The model produced an invalid image ({exc}). Try another seed.") from None
        except Exception as exc:
            if not _is_oom(exc) or settings.vae_tiling:
                raise
            failure = exc
        self._recover_memory()
        dec.set_tiling(pipe.vae, True, self.spec.family)
        dec.set_slicing(pipe.vae, True)
        notes.append("Decoding ran out of GPU memory; decoded again with VAE tiling.")
        try:
            return dec.decode(pipe, latents, r.height, r.width)
        except Exception as exc:
            if _is_oom(exc):
                raise EngineError("Out of GPU memory while decoding, even tiled. Try a smaller size.") from failure
            raise

    def _call_kwargs(self, r: ResolvedRequest, pipe, settings: RunSettings, on_step) -> dict:
        import torch

        kwargs = dict(
            prompt=model_prompt(r, self.spec),
            height=r.height,
            width=r.width,
            num_inference_steps=r.steps,
            num_images_per_prompt=r.num_images,
            generator=[torch.Generator("cpu").manual_seed(s) for s in r.seeds],
            true_cfg_scale=r.true_cfg,
            output_type="latent",
            callback_on_step_end=on_step,
        )
        if r.uses_cfg:
            kwargs["negative_prompt"] = r.negative_prompt
        if r.images:
            kwargs["image"] = list(r.images)
        if self.spec.family == "qwen-image-2.1":
            kwargs["output_resolution"] = r.reference_resolution
            kwargs["use_kv_cache"] = settings.kv_cache
            if r.sigmas:
                kwargs["sigmas"] = list(r.sigmas)
        else:
            kwargs["max_sequence_length"] = self.spec.max_sequence_length
        return kwargs

    def unload(self) -> None:
        with self._job_lock:
            self._loaded = None
            self.embed_cache.clear()
            self._recover_memory()


def _preview(latents, r: ResolvedRequest):
    try:
        return latent_preview(latents, r.width, r.height)
    except Exception:  # a preview is a nicety: never fail a job over it
        log.exception("latent preview failed")
        return None


class _reference_area:
    """The 20B edit pipeline resizes references to a fixed area (a module constant); make it our setting.

    Applied under the engine's one-job-at-a-time lock and restored afterwards.
    """

    def __init__(self, spec: ModelSpec, resolution: int):
        self.active = spec.family == "qwen-image"
        self.area = resolution * resolution

    def __enter__(self):
        if self.active:
            from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as mod

            self.mod, self.saved = mod, mod.VAE_IMAGE_SIZE
            mod.VAE_IMAGE_SIZE = self.area
        return self

    def __exit__(self, *exc):
        if self.active:
            self.mod.VAE_IMAGE_SIZE = self.saved
        return False
