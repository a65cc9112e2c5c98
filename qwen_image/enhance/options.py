"""Command-line options of the prompt enhancer (shared by the app and the CLI) and building the enhancer they ask for.

Without ``--enhancer-url`` the loaded text encoder rewrites (local); with it, the endpoint does; ``--no-enhancer``
(app) offers no enhancement at all.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from .base import Enhancer, load_config
from .endpoint import Endpoint, EndpointEnhancer, read_system_prompt

KEY_ENV = "QIC_ENHANCER_KEY"


def add_arguments(parser: argparse.ArgumentParser, app: bool = False) -> None:
    g = parser.add_argument_group("prompt enhancer")
    g.add_argument(
        "--enhancer-url",
        help="OpenAI-compatible chat-completions endpoint that rewrites prompts, e.g. http://localhost:8100/v1 "
        "(default: the loaded text encoder rewrites them)",
    )
    g.add_argument("--enhancer-model", help="model name at that endpoint (default: the first it lists)")
    g.add_argument("--enhancer-key", help=f"API key for the endpoint (default: ${KEY_ENV})")
    g.add_argument("--enhancer-edit-url", help="another endpoint for edits (e.g. Qwen-Image-2.1-PE-I2I)")
    g.add_argument("--enhancer-edit-model", help="model name at the edit endpoint")
    g.add_argument(
        "--enhancer-system-prompt",
        metavar="FILE",
        help="send this system prompt instead of ours (a file, or a checkpoint folder with system_prompt.txt: the "
        "official PE models were trained with theirs)",
    )
    g.add_argument("--enhancer-edit-system-prompt", metavar="FILE", help="the same for edits")
    g.add_argument("--enhancer-timeout", type=float, metavar="S", help="seconds one rewrite may take (endpoint)")
    if app:
        g.add_argument("--no-enhancer", action="store_true", help="offer no prompt enhancement")


def wants_local(args) -> bool:
    """The loaded text encoder will rewrite (so its lm_head is counted when choosing a memory profile)."""
    return not getattr(args, "no_enhancer", False) and not getattr(args, "enhancer_url", None)


def endpoint_enhancer(args) -> EndpointEnhancer:
    config = load_config()
    if args.enhancer_timeout:
        config = replace(config, endpoint=replace(config.endpoint, total_timeout=float(args.enhancer_timeout)))
    key = args.enhancer_key or os.environ.get(KEY_ENV, "")
    main = Endpoint(args.enhancer_url, args.enhancer_model or "", key, read_system_prompt(args.enhancer_system_prompt))
    edit = None
    if args.enhancer_edit_url or args.enhancer_edit_model or args.enhancer_edit_system_prompt:
        edit = Endpoint(
            args.enhancer_edit_url or args.enhancer_url,
            args.enhancer_edit_model or ("" if args.enhancer_edit_url else main.model),
            key,
            read_system_prompt(args.enhancer_edit_system_prompt),
        )
    elif main.system_prompt:  # the T2I checkpoint's prompt is no instruction for edits
        edit = replace(main, system_prompt="")
    return EndpointEnhancer(main, config, edit)


def build_enhancer(args, backend) -> Enhancer | None:
    """The enhancer the options ask for; None when there is none (``--no-enhancer``, or a backend with no text
    encoder of its own and no endpoint)."""
    if getattr(args, "no_enhancer", False):
        return None
    if getattr(args, "enhancer_url", None):
        return endpoint_enhancer(args)
    if hasattr(backend, "exclusive"):  # an in-process engine lends its loaded model (remote backends have none)
        from .local import LocalEnhancer

        return LocalEnhancer(backend)
    return None
