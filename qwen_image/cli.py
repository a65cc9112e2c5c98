"""Headless command line: ``python -m qwen_image plan|generate|edit``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .enhance.options import add_arguments as add_enhancer_arguments
from .metadata import image_settings, save_png
from .profiles import profile_names
from .speed import ATTENTION_HELP, COMPILE_HELP


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="auto", help="registry name (tiny, qwen-image-2.1, ...), a folder or a Hub id")
    p.add_argument("--family", choices=["qwen-image-2.1", "qwen-image"], help="family of a folder/Hub id model")
    p.add_argument("--profile", choices=profile_names(), help="memory profile (default: chosen automatically)")


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt")
    p.add_argument("--out", required=True, help="output PNG; with several images: name-1.png, name-2.png, ...")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float, help="true CFG scale (needs a negative prompt when above 1)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--ratio", help="aspect ratio, e.g. 16:9")
    p.add_argument("--tier", help="resolution tier: 1K, 1.5K or 2K")
    p.add_argument("--num-images", type=int, default=1)
    p.add_argument("--transparent", action="store_true", help="transparent background (Qwen-Image-2.1)")
    p.add_argument("--reference-resolution", type=int)
    p.add_argument("--attention-backend", help=ATTENTION_HELP)
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--enhance", action="store_true", help="rewrite the prompt first (prompt enhancer; see below)")
    add_enhancer_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qwen_image", description="Qwen-Image engine, headless")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="choose a memory profile and print its predicted peak memory")
    _model_args(plan)
    plan.add_argument("--vram", type=float, help="GPU memory in GiB (default: this machine's free VRAM)")
    plan.add_argument("--ram", type=float, help="system RAM in GiB (default: this machine's available RAM)")
    plan.add_argument("--width", type=int)
    plan.add_argument("--height", type=int)
    plan.add_argument("--all", action="store_true", help="predict every profile, not only the chosen one")
    plan.add_argument("--enhancer", action="store_true", help="count the local prompt enhancer's lm_head")
    plan.add_argument("--json", action="store_true")

    gen = sub.add_parser("generate", help="text to image")
    _model_args(gen)
    _request_args(gen)

    edit = sub.add_parser("edit", help="edit one or more images")
    _model_args(edit)
    edit.add_argument("--image", action="append", required=True, help="reference image (repeat for several)")
    _request_args(edit)
    edit.add_argument("--match-reference", type=int, help="output follows this reference's aspect ratio (1-based)")
    return parser


def _plan(args) -> int:
    from .factory import choose_setup
    from .planner import planning_workload, predict
    from .profiles import get_profile

    vram = args.vram
    choice = choose_setup(args.model, args.family, args.profile, vram_gb=vram, ram_gb=args.ram, enhancer=args.enhancer)
    plan = choice.plan
    spec = choice.spec
    if args.width or args.height:
        workload = planning_workload(spec, args.width, args.height, enhancer=args.enhancer)
        plan = predict(spec, get_profile(plan.profile, spec.family), workload, budget_gb=plan.budget_gb)
    others = []
    if args.all:
        workload = planning_workload(spec, args.width, args.height, enhancer=args.enhancer)
        for name in profile_names():
            prof = get_profile(name, spec.family)
            others.append(predict(spec, prof, workload, budget_gb=plan.budget_gb if prof.device == "cuda" else None))
    if args.json:
        out = {"model": spec.key, "reason": choice.reason, "plan": plan.as_dict()}
        if others:
            out["profiles"] = [p.as_dict() for p in others]
        print(json.dumps(out, indent=2))
        return 0
    print(f"model:   {spec.label}")
    print(f"profile: {plan.profile}  ({plan.profile_label})")
    print(f"         {plan.profile_settings}")
    print(f"why:     {choice.reason}")
    w = plan.workload
    print(f"for:     {w['width']}x{w['height']}, {w['references']} reference(s), {w['prompt_tokens']}-token prompt")
    print(f"peak:    {plan.peak_gb:.2f} GiB during {plan.peak_phase} (VAE tiling {'on' if plan.vae_tiling else 'off'})")
    for comp, gb in plan.weights_gb.items():
        print(f"  weights {comp:13s} {gb:7.2f} GiB")
    for phase, gb in plan.phases_gb.items():
        print(f"  phase   {phase:13s} {gb:7.2f} GiB  (activations {plan.activations_gb[phase]:.2f})")
    if plan.host_ram_gb:
        print(f"  system RAM for offloaded weights: {plan.host_ram_gb:.1f} GiB")
    print(f"  system RAM at the load peak: {plan.load_ram_gb:.1f} GiB")
    for p in others:
        verdict = "" if p.fits is None else " fits" if p.fits else " too big"
        print(f"  {p.profile:8s} peak {p.peak_gb:7.2f} GiB ({p.peak_phase}){verdict}")
    return 0


def _run(args, images: list) -> int:
    from .engine import Cancelled, EngineError
    from .enhance.options import wants_local
    from .factory import build_engine, choose_setup
    from .generation import GenerationRequest, ValidationError
    from .loader import LoadOptions

    choice = choose_setup(args.model, args.family, args.profile, enhancer=args.enhance and wants_local(args))
    if choice.spec.tiny:
        print("note: the tiny demo model has random weights; its images are noise.", file=sys.stderr)
    engine = build_engine(choice, LoadOptions(attention_backend=args.attention_backend, compile_blocks=args.compile))
    engine.start()
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        images=tuple(images),
        width=args.width,
        height=args.height,
        aspect_ratio=args.ratio,
        tier=args.tier,
        match_reference=getattr(args, "match_reference", None),
        steps=args.steps,
        true_cfg=args.cfg,
        seed=args.seed,
        num_images=args.num_images,
        transparent=args.transparent,
        reference_resolution=args.reference_resolution,
    )

    def progress(p):
        if p.phase == "denoising":
            print(f"\r  step {p.step}/{p.total}  eta {p.eta or 0:.1f}s ", end="", file=sys.stderr, flush=True)

    try:
        if args.enhance:
            request = _enhance(args, engine, request)
        result = engine.generate(request, on_progress=progress)
    except (ValidationError, EngineError, Cancelled) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    out = Path(args.out)
    settings = result.request.settings()
    for i, (image, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        path = out if len(result.images) == 1 else out.with_name(f"{out.stem}-{i + 1}{out.suffix or '.png'}")
        save_png(image, path, image_settings(settings, seed, i))
        print(f"{path}  seed {seed}  {image.width}x{image.height} {image.mode}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _enhance(args, engine, request):
    """The request with its prompt rewritten (streamed to stderr), resolved; the prompt as written if that fails."""
    from .enhance import resolve_enhanced, task_for
    from .enhance.options import build_enhancer

    enhancer = build_enhancer(args, engine)
    print(f"enhancing the prompt ({enhancer.name})", file=sys.stderr)
    shown = [""]

    def stream(text: str) -> None:
        print(text[len(shown[0]) :] if text.startswith(shown[0]) else f"\n{text}", end="", file=sys.stderr, flush=True)
        shown[0] = text

    enhancement = enhancer.enhance(task_for(request, engine.spec, request.images), on_text=stream)
    resolved, enhancement = resolve_enhanced(engine.resolve, request, enhancement)
    print(file=sys.stderr)
    if enhancement.note:
        print(f"note: {enhancement.note}", file=sys.stderr)
    else:
        print(f"enhanced prompt: {enhancement.prompt}", file=sys.stderr)
    return resolved


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plan":
        return _plan(args)
    images = []
    if args.command == "edit":
        from .images import ImageInputError, open_image

        try:
            images = [open_image(p, keep_alpha=True) for p in args.image]
        except ImageInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return _run(args, images)
