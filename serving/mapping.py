"""How a request maps onto an OpenAI-Images server, and what each kind of server takes.

Facts from the servers' public documentation (README, "Serving many users", has the table and the links):

- vLLM-Omni (``vllm serve MODEL --omni``): ``POST /v1/images/generations`` takes JSON ``prompt, model, n, size
  "WxH", response_format "b64_json", output_format`` and its extension fields ``negative_prompt,
  num_inference_steps, guidance_scale, true_cfg_scale, seed``; ``POST /v1/images/edits`` takes the same as
  multipart form fields plus the images as repeated ``image`` (or ``image[]``) files. ``GET /v1/models`` lists the
  one model the server runs (``owned_by: "vllm"``). Errors come as ``{"detail": ...}`` or ``{"error": {...}}``.
- SGLang Diffusion (``sglang serve --model-path MODEL``): the same endpoints and extension fields; its
  ``response_format`` defaults to ``url`` and its ``seed`` to 1024, so both are always sent. ``GET /v1/models`` says
  ``owned_by: "sglang"``.
- This app (``python app.py --openai-api``): the same, plus ``background: "transparent"``, ``reference_resolution``
  and ``marked``; ``owned_by: "qwen-image-chat"``.

Nothing is dropped silently: a kind's ``settings`` are the ``GenerationRequest`` settings it honours, and the pool
refuses a request that needs another one (the UI hides those settings).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from qwen_image.backend import REQUEST_SETTINGS
from qwen_image.generation import ResolvedRequest, model_prompt
from qwen_image.registry import ModelSpec, load_registry

OWNED_BY = "qwen-image-chat"  # what our own server answers in /v1/models

# What every OpenAI-Images server with the diffusion extension fields takes. Marks are pixels on the first reference
# and a sentence in the prompt (the model's own convention), so they travel to any server that runs the model.
COMMON_SETTINGS = frozenset(
    {
        "negative_prompt",
        "width",
        "height",
        "aspect_ratio",
        "tier",
        "match_reference",
        "steps",
        "true_cfg",
        "seed",
        "num_images",
        "marked",
    }
)


@dataclass(frozen=True)
class ServerKind:
    name: str
    label: str
    settings: frozenset  # the GenerationRequest settings it honours
    seeds_in_batch: bool  # n images in one request get seeds seed, seed+1, ... (else: one request per image)


OURS = ServerKind(OWNED_BY, "Qwen Image Chat", REQUEST_SETTINGS, seeds_in_batch=True)
VLLM = ServerKind("vllm-omni", "vLLM-Omni", COMMON_SETTINGS, seeds_in_batch=False)
SGLANG = ServerKind("sglang", "SGLang Diffusion", COMMON_SETTINGS, seeds_in_batch=False)
GENERIC = ServerKind("openai-compatible", "OpenAI-compatible server", COMMON_SETTINGS, seeds_in_batch=False)
_BY_OWNER = {OWNED_BY: OURS, "vllm": VLLM, "vllm-omni": VLLM, "sglang": SGLANG}


def kind_from_models(payload) -> tuple[ServerKind, str | None]:
    """The server's kind and its model id from a ``GET /models`` answer (its first model)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ValueError("its /models answer lists no model")
    first = data[0]
    model_id = first.get("id") if isinstance(first.get("id"), str) else None
    owner = str(first.get("owned_by") or "").lower()
    return _BY_OWNER.get(owner, GENERIC), model_id


# -- which model a server runs ----------------------------------------------------------------------------------------
def spec_for_model_id(model_id: str | None) -> ModelSpec | None:
    """The registry model a served model id stands for: a registry name (our own servers), a Hub id of a registry
    checkpoint, or a name containing one (a local path, ``--served-model-name``). None when it is none of them."""
    if not model_id:
        return None
    reg = load_registry()
    if model_id in reg.models:
        return reg.models[model_id]
    plain = [s for s in reg.models.values() if not s.tiny and s.lora_generate is None]
    for spec in plain:
        if model_id in (spec.generate_checkpoint, spec.edit_checkpoint):
            return spec
    name = model_id.rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    for spec in sorted(plain, key=lambda s: -len(s.generate_checkpoint or "")):
        for checkpoint in (spec.generate_checkpoint, spec.edit_checkpoint):
            if checkpoint and checkpoint.rsplit("/", 1)[-1].lower() in name:
                return spec
    if "qwen-image" in name:
        return reg.by_family("qwen-image-2.1" if "2.1" in name else "qwen-image")
    return None


def roles_for(spec: ModelSpec, model_id: str | None) -> frozenset:
    """What a server running ``model_id`` can do for ``spec``: 2.1 generates and edits with one model; the 20B family
    needs a generation server and an edit server (one model per server)."""
    if spec.one_pipeline or not model_id:
        return frozenset({"generate", "edit"})
    name = model_id.lower()
    return frozenset({"edit"}) if "edit" in name else frozenset({"generate"})


# -- requests ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One HTTP request to a server: the path, the fields, and the reference images as PNG files."""

    path: str  # "/images/generations" (JSON) or "/images/edits" (multipart)
    fields: dict
    files: tuple = ()  # ((field name, (file name, bytes, content type)), ...)
    count: int = 1  # images it asks for

    @property
    def multipart(self) -> bool:
        return bool(self.files)

    def form(self) -> dict:
        """The fields as multipart form strings."""
        return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in self.fields.items()}


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def calls_for(r: ResolvedRequest, spec: ModelSpec, kind: ServerKind, model_id: str | None) -> list[Call]:
    """The HTTP requests that make ``r`` on a server of ``kind``: one request for all images where the server seeds
    a batch like our engine (seed, seed+1, ...), else one request per image with its own seed."""
    fields = {
        "prompt": r.prompt if kind is OURS else model_prompt(r, spec),
        "size": f"{r.width}x{r.height}",
        "num_inference_steps": r.steps,
        "true_cfg_scale": r.true_cfg,
        "response_format": "b64_json",
        "output_format": "png",
    }
    if model_id:
        fields["model"] = model_id
    if r.uses_cfg:
        fields["negative_prompt"] = r.negative_prompt
    if kind is OURS:
        fields["reference_resolution"] = r.reference_resolution
        if r.transparent:
            fields["background"] = "transparent"
        if r.marked:
            fields["marked"] = True
    files = tuple(("image", (f"reference-{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(r.images, 1))
    path = "/images/edits" if r.images else "/images/generations"
    if kind.seeds_in_batch:
        return [Call(path, {**fields, "n": r.num_images, "seed": r.seed}, files, r.num_images)]
    return [Call(path, {**fields, "n": 1, "seed": seed}, files, 1) for seed in r.seeds]


# -- answers ----------------------------------------------------------------------------------------------------------
def images_from(payload, expected: int) -> list:
    """The images of a successful answer (``data[].b64_json``), checked; raises ValueError naming what is wrong."""
    from PIL import Image

    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise ValueError("the answer has no images")
    images = []
    for item in data:
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(b64, str):
            raise ValueError("the answer carries image URLs instead of b64_json images")
        try:
            with Image.open(io.BytesIO(base64.b64decode(b64, validate=False))) as im:
                im.load()
                images.append(im.convert("RGBA") if im.mode in ("RGBA", "LA", "PA") else im.convert("RGB"))
        except Exception as exc:
            raise ValueError(f"an image in the answer cannot be read ({type(exc).__name__})") from None
    if len(images) != expected:
        raise ValueError(f"the answer has {len(images)} images instead of {expected}")
    return images


def error_text(payload, fallback: str) -> str:
    """The message of an error answer, whichever shape it has: OpenAI's ``{"error": {"message"}}``, FastAPI's
    ``{"detail": "..."}`` or ``{"detail": [{"msg"}]}``, or a bare ``{"message"}``."""
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        detail = payload.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return "; ".join(str(d.get("msg", d)) for d in detail[:3])
        if isinstance(payload.get("message"), str):
            return payload["message"]
    return fallback
