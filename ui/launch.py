"""Command-line options, safe launch settings, and assembling engine + store + jobs + UI."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

from .sessions import MAX_SESSIONS

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def default_data_dir() -> Path:
    env = os.environ.get("QIC_DATA_DIR")
    if env:
        return Path(env)
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():  # Spaces persistent storage
        return Path("/data/qwen-image-chat")
    from platformdirs import user_data_dir

    return Path(user_data_dir("qwen-image-chat", appauthor=False))


def parse_args(argv=None) -> argparse.Namespace:
    from qwen_image.enhance.options import add_arguments as add_enhancer_arguments
    from qwen_image.profiles import profile_names
    from qwen_image.speed import ATTENTION_HELP, COMPILE_HELP

    p = argparse.ArgumentParser(description="Qwen Image Chat: create and edit images with Qwen-Image in a browser")
    p.add_argument(
        "--model",
        default="auto",
        help="auto (Qwen-Image-2.1 on a CUDA GPU, else the tiny demo model), a registry name "
        "(qwen-image-2.1, qwen-image-2.1-turbo, qwen-image, tiny, ...), or a folder / Hub id with --family",
    )
    p.add_argument("--family", choices=["qwen-image-2.1", "qwen-image"])
    p.add_argument("--profile", choices=profile_names(), help="memory profile (default: chosen from free VRAM)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--public", action="store_true", help="allow a non-local --host without --auth")
    p.add_argument("--auth", action="append", metavar="USER:PASSWORD", help="require a login (repeatable)")
    p.add_argument("--auth-file", type=Path, help="file with one USER:PASSWORD per line")
    p.add_argument("--data-dir", type=Path, default=None, help="where conversations and images are kept")
    p.add_argument("--root-path", default=os.environ.get("GRADIO_ROOT_PATH"), help="URL prefix behind a proxy")
    p.add_argument("--max-file-size", default="25mb", help="largest upload accepted (e.g. 25mb)")
    p.add_argument("--rate-limit", type=int, default=30, help="generation requests per minute per user (0: off)")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait for the GPU")
    p.add_argument(
        "--max-sessions",
        type=int,
        default=MAX_SESSIONS,
        help="browser tabs and API clients whose full Gradio state is kept in memory (about 250 KiB each); the least "
        "recently used beyond this keep only who they are and what they have open",
    )
    p.add_argument("--attention-backend", default=None, help=ATTENTION_HELP)
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    remote = p.add_argument_group("serving many users (README: Serving many users)")
    remote.add_argument(
        "--backend",
        action="append",
        metavar="URL",
        help="use this OpenAI-Images server (vLLM-Omni, SGLang Diffusion, another copy of this app) instead of loading "
        "a model, e.g. http://gpu-box:8000/v1 (repeatable: requests go to the least busy one)",
    )
    remote.add_argument(
        "--backend-key", default=os.environ.get("QIC_BACKEND_KEY"), help="API key of the --backend servers"
    )
    remote.add_argument("--backend-concurrency", type=int, default=1, help="requests each --backend is given at once")
    remote.add_argument(
        "--backend-check-interval", type=float, default=5.0, help="seconds between health checks of the backends"
    )
    remote.add_argument(
        "--openai-api", action="store_true", help="also serve /v1/images/generations, /v1/images/edits, /v1/models"
    )
    remote.add_argument("--mcp", action="store_true", help="also serve generate and edit as MCP tools (at /mcp)")
    remote.add_argument(
        "--api-key",
        "--openai-api-key",
        default=os.environ.get("QIC_API_KEY"),
        help="the key --openai-api and --mcp clients must send (required beyond localhost; or $QIC_API_KEY)",
    )
    add_enhancer_arguments(p, app=True)
    return p.parse_args(argv)


def read_auth(args) -> list[tuple[str, str]]:
    pairs = []
    lines = list(args.auth or [])
    if args.auth_file:
        lines += [ln.strip() for ln in Path(args.auth_file).read_text().splitlines() if ln.strip() and ln[0] != "#"]
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"--auth entries must be USER:PASSWORD (got {user!r}...)")
        pairs.append((user, password))
    return pairs


def check_public_bind(host: str, auth: list, public: bool, share: bool) -> None:
    """Refuse to serve beyond this machine without a login unless explicitly told to."""
    on_spaces = bool(os.environ.get("SPACE_ID"))  # Hugging Face decides who reaches a Space (private/public)
    if (host not in LOCAL_HOSTS or share) and not auth and not public and not on_spaces:
        raise SystemExit(
            f"Refusing to serve on {host if not share else 'a share link'} without a login: anyone who can reach it "
            "could use your GPU and see the images. Add --auth USER:PASSWORD (or --auth-file), or --public if that is "
            "really what you want."
        )


def api_key(args) -> str | None:
    """The key API and MCP clients must send; refuse to serve those beyond this machine without one."""
    key = args.api_key or None
    serving = args.openai_api or args.mcp
    if serving and key is None and (args.host not in LOCAL_HOSTS or args.share):
        raise SystemExit(
            f"Refusing to serve the OpenAI API / MCP on {args.host if not args.share else 'a share link'} without an "
            "API key: anyone who can reach it could use your GPU. Add --api-key KEY (or set QIC_API_KEY); clients send "
            "it as 'Authorization: Bearer KEY'."
        )
    return key


def byte_size(text: str) -> int:
    """'25mb' -> bytes (b, kb, mb, gb)."""
    match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)?\s*", str(text).lower())
    if match is None:
        raise SystemExit(f"--max-file-size must look like 25mb, not {text!r}")
    return int(match.group(1)) * {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}[match.group(2) or "b"]


def api_app_kwargs(args, ctx, key: str | None) -> dict:
    """Routes (and the MCP lifespan) for Gradio's FastAPI app: the OpenAI Images API and the MCP tools, when asked."""
    if not (args.openai_api or args.mcp):
        return {}
    if ctx.jobs.runs_in_watcher:  # their jobs would wait forever: only a page's event gets a ZeroGPU slot
        raise SystemExit(
            "--openai-api and --mcp are not available on ZeroGPU: their requests come from outside the page, where no "
            "ZeroGPU slot can be had. Run them on a Space with a dedicated GPU or on your own machine."
        )
    from serving.service import ImageService

    service = ImageService(ctx.turns, ctx.jobs, ctx.store)
    routes, extra = [], {}
    if args.openai_api:
        from serving.openai_api import api_routes

        body = byte_size(args.max_file_size) * (ctx.spec.max_references + 1) + 2**20
        routes += api_routes(service, ctx.backend, key, body)
    if args.mcp:
        from serving.mcp import mcp_mount

        mount, extra["lifespan"] = mcp_mount(service, ctx.media.download, ctx.media.outbox, key, "Qwen Image Chat")
        routes.append(mount)
    return {"routes": routes, **extra}


def launch_kwargs(args, outbox: Path, auth: list) -> dict:
    from .app import CSS, HEAD
    from .i18n import i18n

    return dict(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        max_file_size=args.max_file_size,
        enable_monitoring=False,
        state_session_capacity=max(1, args.max_sessions),  # see ui/sessions.py
        strict_cors=True,
        allowed_paths=[str(outbox)],
        root_path=args.root_path,
        show_error=False,
        css=CSS,
        head=HEAD,
        footer_links=["api"],
        i18n=i18n(),
    )


def browser_secret(data_dir: Path) -> str:
    """A stable secret for gr.BrowserState (derived from the server secret) so that owners survive restarts."""
    from conversations.owners import load_secret

    return hashlib.sha256(b"browser-state:" + load_secret(data_dir)).hexdigest()[:32]


def build(args):
    """Backend (loading in the background), the conversation services and the Blocks app."""
    from conversations.jobs import JobManager
    from conversations.owners import Owners, OwnerTokens
    from conversations.store import Store
    from conversations.turns import TurnService
    from conversations.zerogpu import gpu_slot, zerogpu_active
    from qwen_image.enhance.options import build_enhancer

    from .app import build_app
    from .context import AppContext
    from .media import Media

    # Gradio keeps timings of the last N events for its monitoring page (off here): 10,000 by default
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "500")
    data_dir = Path(args.data_dir or default_data_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir)
    interrupted = store.recover_interrupted()
    media = Media(data_dir / "outbox")
    media.sweep()

    if args.backend:  # remote servers instead of a model: no torch here
        from serving.pool import RemotePool

        backend = RemotePool.connect(
            args.backend,
            args.model,
            args.backend_key,
            args.backend_concurrency,
            check_interval=args.backend_check_interval,
            family=args.family,
        )
    else:
        from qwen_image.enhance.options import wants_local
        from qwen_image.factory import deferred_engine
        from qwen_image.loader import LoadOptions

        options = LoadOptions(attention_backend=args.attention_backend, compile_blocks=args.compile)
        # probes and loads in the background; the local prompt enhancer's lm_head counts when choosing the profile
        backend = deferred_engine(args.model, args.family, args.profile, options, enhancer=wants_local(args))
    zero = zerogpu_active() and not args.backend
    jobs = JobManager(
        backend,
        store,
        max_queue=args.queue_size,
        rate_limit=args.rate_limit,
        workers=backend.capabilities.concurrent_jobs,
        gpu_slot=gpu_slot if zero else None,
    )
    if zero:  # ZeroGPU: the model is loaded (and moved to CUDA) before serving
        backend.start()
        backend.wait_ready()
    ctx = AppContext(
        backend=backend,
        store=store,
        jobs=jobs,
        turns=TurnService(backend, store, jobs, enhancer=build_enhancer(args, backend)),
        owners=Owners(OwnerTokens(data_dir), store),
        media=media,
        data_dir=data_dir,
        browser_secret=browser_secret(data_dir),
    )
    return build_app(ctx), ctx, interrupted
