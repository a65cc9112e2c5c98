"""What a user chooses for a turn (the settings panel's values), and the one place where they become a request.

``TurnSettings`` holds the values as the UI, the API or a stored turn give them; ``request()`` turns them into a
``GenerationRequest`` (checked later, by the backend's ``resolve``). ``stored_request()`` re-runs a stored turn.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from qwen_image.generation import GenerationRequest
from qwen_image.registry import ModelSpec

AUTO = "auto"  # ratio: the shape of the image being edited, else 1:1
MATCH = "match"  # ratio: the shape of the reference named by ``match_reference``


@dataclass(frozen=True)
class TurnSettings:
    ratio: str | None = AUTO
    tier: str | None = None
    steps: int | None = None
    cfg: float | None = None
    negative: str | None = ""
    seed: float | None = None
    randomize: bool = True
    num_images: int = 1
    transparent: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls, spec: ModelSpec, ratio: str = AUTO) -> TurnSettings:
        return cls(
            ratio=ratio,
            tier=spec.default_tier,
            steps=spec.steps,
            cfg=spec.true_cfg,
            negative=spec.negative_prompt.strip(),
            seed=0,
        )

    @classmethod
    def from_stored(cls, spec: ModelSpec, settings: dict) -> TurnSettings:
        """The values that refill the panel from a stored turn or a PNG's settings (Reuse settings)."""
        seed = settings.get("seed")
        return cls(
            ratio=settings.get("aspect_ratio") if settings.get("aspect_ratio") in spec.ratios else AUTO,
            tier=settings.get("tier") if settings.get("tier") in spec.tier_names else spec.default_tier,
            steps=int(settings.get("steps") or spec.steps),
            cfg=float(settings.get("true_cfg", spec.true_cfg) or 1.0),
            negative=(settings.get("negative_prompt") or "").strip(),
            seed=seed if isinstance(seed, int) else 0,
            randomize=not isinstance(seed, int),
            num_images=int(settings.get("num_images") or 1),
            transparent=bool(settings.get("transparent")) and spec.transparent,
        )

    def request(
        self,
        spec: ModelSpec,
        prompt,
        size: tuple | None = None,
        match_reference: int | None = None,
        marked: bool = False,
    ) -> GenerationRequest:
        """A request without images (the turn service adds them). ``size`` is an explicit (width, height) that
        replaces ratio and tier; ``match_reference`` (1-based) is the reference whose shape the output follows when
        the ratio is ``MATCH``."""
        ratio = None if self.ratio in (AUTO, MATCH, None, "") else self.ratio
        follow = match_reference if self.ratio in (MATCH, None, "") and size is None else None
        if follow is not None or size is not None:
            ratio = None
        cfg = float(self.cfg) if self.cfg is not None else None
        return GenerationRequest(
            prompt=prompt if isinstance(prompt, str) else "",
            negative_prompt=self.negative if cfg is not None and cfg > 1 else None,
            aspect_ratio=ratio,
            width=size[0] if size else None,
            height=size[1] if size else None,
            tier=self.tier,
            match_reference=follow,
            steps=None if spec.sigmas else self.steps,
            true_cfg=cfg,
            seed=None if self.randomize or self.seed is None else self.seed,
            num_images=self.num_images,
            transparent=bool(self.transparent) and spec.transparent,
            marked=marked,
        )


def stored_request(prompt: str, settings: dict, new_seed: bool = True) -> GenerationRequest:
    """Re-run a stored turn: the same prompt, size and settings (a new seed unless told otherwise), no images yet."""
    cfg = settings.get("true_cfg")
    neg = settings.get("negative_prompt") or None
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=neg if cfg and cfg > 1 else None,
        width=settings.get("width"),
        height=settings.get("height"),
        steps=None if settings.get("sigmas") else settings.get("steps"),
        true_cfg=cfg,
        seed=None if new_seed else settings.get("seed"),
        num_images=settings.get("num_images", 1),
        transparent=bool(settings.get("transparent")),
        reference_resolution=settings.get("reference_resolution"),
        marked=bool(settings.get("marked")),
        original_prompt=settings.get("original_prompt") or None,
        enhancer=settings.get("enhancer") or None,
    )
