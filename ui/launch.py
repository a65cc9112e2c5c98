"""Command-line options, safe launch settings, and assembling engine + store + jobs + UI."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

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
    p.add_argument("--attention-backend", default=None, help="diffusers attention backend (e.g. flash, sage)")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the transformer blocks")
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


def launch_kwargs(args, outbox: Path, auth: list) -> dict:
    from .app import CSS

    return dict(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        max_file_size=args.max_file_size,
        enable_monitoring=False,
        strict_cors=True,
        allowed_paths=[str(outbox)],
        root_path=args.root_path,
        show_error=False,
        css=CSS,
        footer_links=["api"],
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
    from qwen_image.enhance.options import build_enhancer, wants_local
    from qwen_image.factory import deferred_engine
    from qwen_image.loader import LoadOptions

    from .app import build_app
    from .context import AppContext
    from .media import Media

    data_dir = Path(args.data_dir or default_data_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir)
    interrupted = store.recover_interrupted()
    media = Media(data_dir / "outbox")
    media.sweep()

    options = LoadOptions(attention_backend=args.attention_backend, compile_blocks=args.compile)
    # probes and loads in the background; the local prompt enhancer's lm_head counts when choosing the profile
    backend = deferred_engine(args.model, args.family, args.profile, options, enhancer=wants_local(args))
    zero = zerogpu_active()
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
