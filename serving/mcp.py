"""MCP: ``generate_image`` and ``edit_image`` as tools, served by Gradio's MCP server (``gradio[mcp]``).

The tools live in a small Blocks of their own, mounted at ``/mcp`` of the app (MCP endpoint
``/mcp/gradio_api/mcp/``), so that an MCP client sees these two documented tools and not every event of the web page.
They run through ``ImageService`` like the OpenAI endpoints (same validation, same job queue, stored under the API
owner); the same API key guards them (``Authorization: Bearer KEY``).
"""

# No ``from __future__ import annotations`` here: Gradio reads the tools' type hints at runtime.

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from qwen_image.generation import GenerationRequest, ValidationError

from .service import API_OWNER, ImageService, bearer_token, key_matches

MOUNT = "/mcp"

GENERATE_DOC = """Create an image from a text prompt with {label}. Returns the image (PNG) and a line with its seed,
size and steps; pass the image's URL to edit_image to change it.

Args:
    prompt: What the image shows, in plain words (up to about 1000 tokens).
    aspect_ratio: The shape: one of {ratios}.
    resolution: The size class: one of {tiers} (default {tier}).
    steps: Denoising steps, 1-100; leave empty for the model's default ({steps}).
    seed: A whole number 0-4294967295 that makes the result reproducible; leave empty for a random one.
    negative_prompt: What to steer away from; only used with true_cfg above 1.
    true_cfg: Guidance strength, 1 (off) to 20; leave empty for the model's default ({cfg:g}).
    transparent: True for a transparent background (PNG with alpha); {transparent_note}
"""

EDIT_DOC = """Edit one or more images with {label}, following an instruction. Returns the new image (PNG) and a line
with its seed, size and steps.

Args:
    prompt: What to change ("make the sky purple"), or how to combine the images; refer to them as <image1>,
        <image2>, ... in the order given.
    images: 1 to {max_refs} images: each a data URL (data:image/png;base64,...) or an image URL that this server
        returned (from generate_image or edit_image).
    aspect_ratio: "auto" keeps the first image's shape; or one of {ratios}.
    resolution: The size class: one of {tiers} (default {tier}).
    steps: Denoising steps, 1-100; leave empty for the model's default ({steps}).
    seed: A whole number 0-4294967295 that makes the result reproducible; leave empty for a random one.
    marked: True when the first image carries red marks: only the marked area is changed.
"""


def _summary(record, settings: dict) -> str:
    parts = [f"seed {record.seed}", f"{record.width}x{record.height}", f"{settings.get('steps')} steps"]
    cfg = settings.get("true_cfg")
    if cfg and cfg > 1:
        parts.append(f"true CFG {cfg:g}")
    return " · ".join(parts)


def _open_reference(item: str, i: int, roots: list[Path], keep_alpha: bool):
    """An image from a data URL or from one of this server's own file URLs, under ``roots`` (nothing else is
    fetched)."""
    from qwen_image.images import ImageInputError, open_image

    name = f"image {i}"
    if not isinstance(item, str) or not item.strip():
        raise ImageInputError(f"{name}: give a data URL or an image URL from this server.")
    item = item.strip()
    if item.startswith("data:"):
        header, _, payload = item.partition(",")
        try:
            encoded = header.endswith(";base64")
            data = base64.b64decode(payload, validate=False) if encoded else unquote_to_bytes(payload)
        except ValueError:
            raise ImageInputError(f"{name}: the data URL cannot be decoded.") from None
        return open_image(data, keep_alpha, name)
    path = unquote(urlsplit(item).path).partition("/gradio_api/file=")[2] or unquote(item.partition("file=")[2])
    if path:
        resolved = Path(path).resolve()
        if any(resolved.is_relative_to(root.resolve()) for root in roots) and resolved.is_file():
            return open_image(resolved, keep_alpha, name)
    raise ImageInputError(
        f"{name}: only data URLs and image URLs returned by this server are accepted (nothing else is fetched)."
    )


def tools(service: ImageService, export: Callable, outbox: Path | None = None) -> tuple[Callable, Callable]:
    """The two tool functions (typed, documented); ``export(record)`` is a servable copy of a stored image, in
    ``outbox`` (handed out from there as it is) or copied into Gradio's cache."""
    import gradio as gr
    from gradio.data_classes import FileData
    from gradio.utils import get_upload_folder

    spec = service.spec
    roots = [Path(get_upload_folder())] + ([Path(outbox) / "downloads"] if outbox is not None else [])
    common = {
        "label": spec.label,
        "ratios": ", ".join(spec.ratios),
        "tiers": ", ".join(spec.tier_names),
        "tier": spec.default_tier,
        "steps": spec.steps,
        "cfg": spec.true_cfg,
        "max_refs": spec.max_references,
        "transparent_note": "this model supports it." if spec.transparent else "this model cannot make it.",
    }

    def run(request: GenerationRequest, images: list) -> tuple[FileData, str]:
        try:
            snap = service.start(request, images)
        except ValidationError as exc:
            raise gr.Error(str(exc)) from None
        last = service.wait(snap)
        if last.state != "done":
            raise gr.Error(f"The image could not be made: {last.error or last.state}")
        turn = service.store.get_turn(API_OWNER, last.turn_id)
        if turn is None or not turn.outputs:
            raise gr.Error("The image could not be made: its result is gone.")
        record = turn.outputs[0]
        return FileData(path=export(record)), _summary(record, turn.settings)

    def generate_image(
        prompt: str,
        aspect_ratio: str = "1:1",
        resolution: str = "",
        steps: int | None = None,
        seed: int | None = None,
        negative_prompt: str = "",
        true_cfg: float | None = None,
        transparent: bool = False,
    ) -> tuple[FileData, str]:
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            aspect_ratio=aspect_ratio or None,
            tier=resolution or None,
            steps=steps,
            seed=seed,
            true_cfg=true_cfg,
            transparent=transparent,
        )
        return run(request, [])

    def edit_image(
        prompt: str,
        images: list[str],
        aspect_ratio: str = "auto",
        resolution: str = "",
        steps: int | None = None,
        seed: int | None = None,
        marked: bool = False,
    ) -> tuple[FileData, str]:
        if not isinstance(images, list) or not images:
            raise gr.Error("Give at least one image to edit.")
        if len(images) > spec.max_references:
            raise gr.Error(f"{len(images)} images given; this model takes at most {spec.max_references}.")
        try:
            opened = [_open_reference(item, i, roots, spec.transparent) for i, item in enumerate(images, 1)]
        except ValidationError as exc:
            raise gr.Error(str(exc)) from None
        request = GenerationRequest(
            prompt=prompt,
            aspect_ratio=None if aspect_ratio in ("", "auto", None) else aspect_ratio,
            tier=resolution or None,
            steps=steps,
            seed=seed,
            marked=marked,
        )
        return run(request, opened)

    generate_image.__doc__ = GENERATE_DOC.format(**common)
    edit_image.__doc__ = EDIT_DOC.format(**common)
    return generate_image, edit_image


class KeyGuard:
    """ASGI wrapper: every HTTP request must carry ``Authorization: Bearer KEY`` (MCP mounts are outside Gradio's
    login)."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.key is not None:
            headers = dict(scope.get("headers") or [])
            token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
            if not key_matches(token, self.key):
                from starlette.responses import JSONResponse

                body = {"error": {"message": "Missing or wrong API key.", "type": "invalid_request_error"}}
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def mcp_mount(service: ImageService, export: Callable, outbox: Path, key: str | None, title: str):
    """(route, lifespan) for ``launch(app_kwargs=...)``: the tools' Blocks mounted at ``MOUNT``, and the lifespan that
    starts its MCP session manager with the app."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.routing import Mount

    generate_image, edit_image = tools(service, export, outbox)
    with gr.Blocks(title=title) as blocks:
        gr.api(generate_image, api_name="generate_image", queue=False)
        gr.api(edit_image, api_name="edit_image", queue=False)
    shell = gr.mount_gradio_app(
        FastAPI(), blocks, path="/", mcp_server=True, allowed_paths=[str(outbox)], footer_links=[], show_error=True
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with shell.router.lifespan_context(shell):
            yield

    return Mount(MOUNT, app=KeyGuard(shell, key)), lifespan
