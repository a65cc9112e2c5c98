"""This app's engine as an OpenAI Images API: ``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits``
(multipart, the images as ``image`` or ``image[]`` files), ``GET /v1/models``.

Routes for the FastAPI app that Gradio serves (``ui.launch`` hands them to ``launch(app_kwargs=...)``, so they come
before Gradio's own). Every request goes through ``ImageService``: the same validation, messages and job queue as the
web UI. Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status a client
expects (400 for a bad request, 401 for a missing or wrong key, 404 for an unknown model, 413 for too large a body,
429 when the queue is full, 500/503 when the model fails). Fields: OpenAI's own, the diffusion extensions that
vLLM-Omni and SGLang Diffusion take (``seed``, ``num_inference_steps``, ``negative_prompt``, ``true_cfg_scale``, with
``guidance_scale`` as another name for it), and ours (``aspect_ratio``, ``resolution``, ``reference_resolution``,
``marked``). A field this server cannot honour is refused with a message, never ignored.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from dataclasses import dataclass

from fastapi import Request

from qwen_image.backend import Backend, BackendError
from qwen_image.generation import GenerationRequest, ValidationError
from qwen_image.images import MAX_FILE_BYTES, ImageInputError, open_image

from .mapping import OWNED_BY
from .service import ImageService, bearer_token, key_matches

log = logging.getLogger(__name__)

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
POLL = 0.1  # seconds between looks at a running job


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = kind or ("invalid_request_error" if status < 500 else "server_error")

    def response(self):
        from fastapi.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


# -- fields ----------------------------------------------------------------------------------------------------------
def _text(name, value):
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string.", name, "invalid_type")
    return value


def _int(name, value):
    return _parsed(name, value, int, (int,), "an integer")


def _number(name, value):
    return _parsed(name, value, float, (int, float), "a number")


def _parsed(name, value, parse, types: tuple, what: str):
    """``value`` as one of ``types`` (a form field's text parsed with ``parse``); booleans are not numbers here."""
    if isinstance(value, str):
        try:
            value = parse(value.strip())
        except ValueError:
            raise ApiError(400, f"'{name}' must be {what}.", name, "invalid_type") from None
    if isinstance(value, bool) or not isinstance(value, types):
        raise ApiError(400, f"'{name}' must be {what}.", name, "invalid_type")
    return value


def _bool(name, value):
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false.", name, "invalid_type")
    return value


def _only(*allowed):
    """A field accepted only with values that change nothing here (OpenAI options this server has no use for)."""

    def check(name, value):
        if value not in allowed:
            shown = ", ".join(repr(a) for a in allowed if a is not None)
            raise ApiError(400, f"'{name}' = {value!r} is not supported here; leave it out or use {shown}.", name)
        return value

    return check


FIELDS = {
    "prompt": _text,
    "model": _text,
    "n": _int,
    "size": _text,
    "response_format": _only(None, "b64_json"),
    "output_format": _only(None, *FORMATS),
    "output_compression": _int,
    "background": _only(None, "auto", "opaque", "transparent"),
    "quality": _only(None, "auto", "standard"),
    "style": _only(None),
    "moderation": _only(None, "auto", "low"),
    "stream": _only(None, False, "false"),
    "partial_images": _only(None, 0, "0"),
    "user": _text,  # an end-user id for abuse tracking: logged, nothing else
    "seed": _int,
    "num_inference_steps": _int,
    "negative_prompt": _text,
    "true_cfg_scale": _number,
    "guidance_scale": _number,
    "aspect_ratio": _text,
    "resolution": _text,
    "reference_resolution": _int,
    "marked": _bool,
}
EDIT_ONLY = {"marked"}
FILES = ("image", "image[]")

# ValidationError.field (the engine's names) -> the API parameter it came from
PARAMS = {
    "prompt": "prompt",
    "negative prompt": "negative_prompt",
    "negative_prompt": "negative_prompt",
    "images": "image",
    "size": "size",
    "Width": "size",
    "Height": "size",
    "aspect_ratio": "aspect_ratio",
    "tier": "resolution",
    "steps": "num_inference_steps",
    "Steps": "num_inference_steps",
    "true_cfg": "true_cfg_scale",
    "True CFG": "true_cfg_scale",
    "Seed": "seed",
    "Number of images": "n",
    "transparent": "background",
    "Reference resolution": "reference_resolution",
    "reference_resolution": "reference_resolution",
    "marked": "marked",
}


@dataclass(frozen=True)
class Output:
    format: str  # PIL format name
    quality: int | None


def read_fields(raw: dict, edit: bool) -> dict:
    """The known fields, converted; unknown ones are refused (OpenAI does the same)."""
    values = {}
    for name, value in raw.items():
        check = FIELDS.get(name)
        if check is None or (name in EDIT_ONLY and not edit):
            raise ApiError(400, f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        if value is not None:
            values[name] = check(name, value)
    if not isinstance(values.get("prompt"), str) or not values["prompt"].strip():
        raise ApiError(400, "'prompt' is required: describe the image (or the change to make).", "prompt", "missing")
    return values


def parse_size(text: str) -> tuple[int, int] | None:
    if text.strip().lower() == "auto":
        return None
    w, sep, h = text.strip().lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ApiError(400, f"'size' must be WIDTHxHEIGHT (e.g. 1024x1024) or 'auto', not {text!r}.", "size")
    return int(w), int(h)


def build_request(values: dict, spec) -> tuple[GenerationRequest, Output]:
    """The request and output format that the fields ask for (values are checked by the backend's resolve)."""
    if values.get("model") not in (None, "", spec.key, spec.generate_checkpoint, spec.edit_checkpoint):
        raise ApiError(
            404,
            f"The model {values['model']!r} does not exist here; this server runs {spec.key!r} (GET /v1/models).",
            "model",
            "model_not_found",
        )
    size = parse_size(values["size"]) if "size" in values else None
    if size is not None and "aspect_ratio" in values:
        raise ApiError(400, "Give 'size' or 'aspect_ratio', not both.", "aspect_ratio")
    cfg = values.get("true_cfg_scale", values.get("guidance_scale"))
    if "true_cfg_scale" in values and "guidance_scale" in values and values["guidance_scale"] != cfg:
        raise ApiError(
            400, "'guidance_scale' is another name for 'true_cfg_scale'; give one of them.", "guidance_scale"
        )
    transparent = values.get("background") == "transparent"
    fmt = FORMATS[values.get("output_format", "png")]
    if transparent and fmt == "JPEG":
        raise ApiError(400, "JPEG has no transparency; ask for output_format 'png' or 'webp'.", "output_format")
    quality = values.get("output_compression")
    if quality is not None and not 0 <= quality <= 100:
        raise ApiError(400, "'output_compression' must be between 0 and 100.", "output_compression")
    request = GenerationRequest(
        prompt=values["prompt"],
        negative_prompt=values.get("negative_prompt"),
        width=size[0] if size else None,
        height=size[1] if size else None,
        aspect_ratio=values.get("aspect_ratio"),
        tier=values.get("resolution"),
        steps=values.get("num_inference_steps"),
        true_cfg=cfg,
        seed=values.get("seed"),
        num_images=values.get("n", 1),
        transparent=transparent,
        reference_resolution=values.get("reference_resolution"),
        marked=values.get("marked", False),
    )
    return request, Output(fmt, quality if fmt != "PNG" else None)


def refusal(exc: ValidationError) -> ApiError:
    """A ValidationError (the same message the UI shows) as an API error."""
    from conversations.faults import StorageError
    from conversations.jobs import Busy

    from .pool import Unavailable

    if isinstance(exc, Busy):
        return ApiError(429, str(exc), None, "rate_limit_exceeded", "rate_limit_error")
    if isinstance(exc, StorageError):  # the server's data folder, not the request
        return ApiError(503, str(exc), None, "storage_unavailable")
    if isinstance(exc, Unavailable):
        return ApiError(503, str(exc), None, "server_unavailable")
    code = "invalid_image" if isinstance(exc, ImageInputError) else "invalid_value"
    return ApiError(400, str(exc), PARAMS.get(exc.field or ""), code)


def encode(path, output: Output) -> str:
    """A stored PNG as base64 in the asked format (PNGs go as stored, with their settings chunks)."""
    from PIL import Image

    if output.format == "PNG":
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")
    with Image.open(path) as im:
        im.load()
        if output.format == "JPEG":
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format=output.format, quality=output.quality if output.quality is not None else 95)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# -- the routes ------------------------------------------------------------------------------------------------------
def api_routes(service: ImageService, backend: Backend, key: str | None, max_body_bytes: int) -> list:
    """The ``/v1`` routes (a list of Starlette routes). ``key``: the API key every request must carry as
    ``Authorization: Bearer KEY`` (None: no key needed, only allowed on a local bind)."""
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    spec = backend.spec

    def check_key(request: Request) -> None:
        if key is None:
            return
        token = bearer_token(request.headers.get("authorization", ""))
        if token is None:
            raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer KEY'.", None, "missing_api_key")
        if not key_matches(token, key):
            raise ApiError(401, "Incorrect API key provided.", None, "invalid_api_key")

    def check_size(request: Request) -> None:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise ApiError(413, f"The request is larger than {max_body_bytes // 2**20} MB.", None, "request_too_large")

    def model_card() -> dict:
        return {
            "id": spec.key,
            "object": "model",
            "created": 0,
            "owned_by": OWNED_BY,
            "root": spec.generate_checkpoint or spec.key,
            "description": spec.label,
        }

    async def models(request: Request):
        """The model this server runs; 503 while it cannot run (failed to load, or no remote server up), so that a
        copy of this app in front of it uses another server meanwhile."""
        try:
            check_key(request)
            status = backend.status
            if status.state == "error":
                raise ApiError(503, f"The model cannot run: {status.message}", None, "server_unavailable")
        except ApiError as exc:
            return exc.response()
        return {"object": "list", "data": [model_card()]}

    async def model(request: Request, model_id: str):
        try:
            check_key(request)
            if model_id != spec.key:
                raise ApiError(404, f"The model {model_id!r} does not exist here.", "model", "model_not_found")
        except ApiError as exc:
            return exc.response()
        return model_card()

    async def generations(request: Request):
        try:
            check_key(request)
            check_size(request)
            try:
                raw = await request.json()
            except ValueError:
                raise ApiError(400, "The body must be a JSON object.", None, "invalid_json") from None
            if not isinstance(raw, dict):
                raise ApiError(400, "The body must be a JSON object.", None, "invalid_json")
            values = read_fields(raw, edit=False)
            req, output = build_request(values, spec)
            log.info("OpenAI API: generation request (%s)", values.get("user", "no user id"))
            snap = await run_in_threadpool(service.start, req, ())
        except ApiError as exc:
            return exc.response()
        except ValidationError as exc:
            return refusal(exc).response()
        return await finish(request, snap, output)

    async def edits(request: Request):
        try:
            check_key(request)
            check_size(request)
            if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
                raise ApiError(
                    400,
                    "Send an edit as multipart/form-data, with the images as files named 'image' or 'image[]'.",
                    "image",
                )
            form = await request.form(max_files=spec.max_references + 4, max_fields=64)
            files = [f for name in FILES for f in form.getlist(name)]
            if any(isinstance(f, str) for f in files):
                raise ApiError(400, "'image' must be uploaded files, not text.", "image")
            for name in ("mask", "url", "url[]", "input_reference"):
                if name in form:
                    raise ApiError(400, _NOT_TAKEN[name], name, "unsupported")
            raw = {k: v for k, v in form.multi_items() if k not in FILES}
            values = read_fields(raw, edit=True)
            if not files:
                raise ApiError(400, "Attach at least one image to edit (a file named 'image' or 'image[]').", "image")
            if len(files) > spec.max_references:
                raise ApiError(
                    400,
                    f"{len(files)} reference images attached; this model takes at most {spec.max_references}.",
                    "image",
                    "too_many_images",
                )
            req, output = build_request(values, spec)
            for i, f in enumerate(files, 1):
                if f.size is not None and f.size > MAX_FILE_BYTES:
                    message = f"image {i}: the file is larger than {MAX_FILE_BYTES // 2**20} MB."
                    raise ApiError(413, message, "image", "file_too_large")
            blobs = [await f.read() for f in files]
            log.info("OpenAI API: edit request with %d image(s) (%s)", len(blobs), values.get("user", "no user id"))
            snap = await run_in_threadpool(_start_edit, service, req, blobs)
        except ApiError as exc:
            return exc.response()
        except ValidationError as exc:
            return refusal(exc).response()
        return await finish(request, snap, output)

    async def finish(request: Request, snap, output: Output):
        """Wait for the job without holding a thread; a client that hangs up cancels it."""
        from fastapi.responses import JSONResponse, Response

        now = snap
        while not now.finished:
            if await request.is_disconnected():
                service.cancel(snap)
                log.info("OpenAI API: the client went away; job %s stopped", snap.id)
                return Response(status_code=499)
            await asyncio.sleep(POLL)
            latest = service.current(snap)
            if latest is None:  # forgotten: cannot happen while a client waits, but never loop forever
                break
            now = latest
        if now.state != "done":
            reason = now.error or now.state
            status = 500 if now.state == "failed" else 503
            return ApiError(status, f"The image could not be made: {reason}", None, now.state).response()
        try:
            records = await run_in_threadpool(service.outputs, now)
            encoded = [await run_in_threadpool(encode, r.path, output) for r in records]
        except (OSError, BackendError) as exc:
            return ApiError(500, f"The result could not be read: {exc}", None, "server_error").response()
        first = records[0] if records else None
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [{"b64_json": b64, "revised_prompt": None} for b64 in encoded],
                "output_format": output.format.lower(),
                "size": f"{first.width}x{first.height}" if first else None,
            }
        )

    router = APIRouter()
    router.add_api_route("/v1/models", models, methods=["GET"], include_in_schema=False)
    router.add_api_route("/v1/models/{model_id:path}", model, methods=["GET"], include_in_schema=False)
    router.add_api_route("/v1/images/generations", generations, methods=["POST"], include_in_schema=False)
    router.add_api_route("/v1/images/edits", edits, methods=["POST"], include_in_schema=False)
    return list(router.routes)


_NOT_TAKEN = {
    "mask": "Masks are not supported: draw red marks on the image instead, send 'marked=true', and say what to change "
    "in the marked area.",
    "url": "Image URLs are not fetched by this server; upload the images as files ('image' or 'image[]').",
    "url[]": "Image URLs are not fetched by this server; upload the images as files ('image' or 'image[]').",
    "input_reference": "Upload the images as files ('image' or 'image[]').",
}


def _start_edit(service: ImageService, req: GenerationRequest, blobs: list[bytes]):
    images = [open_image(b, keep_alpha=service.spec.transparent, name=f"image {i}") for i, b in enumerate(blobs, 1)]
    return service.start(req, images)
