"""Qwen Image Chat: `python app.py` serves the web app (see README). Nothing heavy happens at import."""

from __future__ import annotations

import logging
import os
import sys

if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU wants `spaces` imported before torch
    try:
        import spaces  # noqa: F401
    except ImportError:
        pass


def main(argv=None) -> int:
    from ui.launch import api_app_kwargs, api_key, build, check_public_bind, launch_kwargs, parse_args, read_auth

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request (health checks too) is noise
    args = parse_args(argv)
    auth = read_auth(args)
    check_public_bind(args.host, auth, args.public, args.share)
    key = api_key(args)
    demo, ctx, interrupted = build(args)
    if args.backend:
        print(f"Model:   {ctx.spec.label} on {ctx.backend.status.message}")
    else:
        print(f"Model:   {ctx.spec.label} (loading in the background; the memory profile is logged when chosen)")
    if ctx.spec.tiny:
        print("         Demo model with random weights: images are noise. On a CUDA GPU the real model is used.")
    print(f"Data:    {ctx.data_dir}" + (f" ({interrupted} interrupted job(s) marked failed)" if interrupted else ""))
    demo.queue(max_size=args.queue_size, default_concurrency_limit=8)
    app_kwargs = api_app_kwargs(args, ctx, key)
    demo.launch(**launch_kwargs(args, ctx.media.outbox, auth), app_kwargs=app_kwargs, prevent_thread_lock=True)
    base = demo.local_url.rstrip("/")
    if args.openai_api:
        print(f"API:     {base}/v1 (OpenAI Images: /images/generations, /images/edits, /models)")
    if args.mcp:
        print(f"MCP:     {base}/mcp/gradio_api/mcp/ (tools generate_image, edit_image)")
    ctx.backend.start()  # the page is up; the model loads in the background and the banner shows its status
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
