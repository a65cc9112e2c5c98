"""The model registry: configs/models.toml read into frozen dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .architectures import CONFIG_DIR

FAMILIES = ("qwen-image-2.1", "qwen-image")
TINY_ARCH = {"qwen-image-2.1": "tiny-qwen-image-2.1", "qwen-image": "tiny-qwen-image"}


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    family: str
    generate_pipeline: str
    edit_pipeline: str
    generate_checkpoint: str | None
    edit_checkpoint: str | None
    real_config: str
    license: str
    steps: int
    true_cfg: float
    negative_prompt: str
    max_references: int
    transparent: bool
    kv_cache: bool
    multiple_of: int
    min_side: int
    max_side: int
    max_pixels: int
    default_tier: str
    native_tier: str
    tiers: tuple  # ((name, side), ...)
    sizes: tuple  # ((ratio, (w, h)), ...)
    reference_resolution: int
    max_reference_resolution: int
    seconds_per_megapixel_step: float  # GPU time per denoising step and megapixel (ZeroGPU slots, estimates)
    tiny: bool = False
    allow_cfg: bool = True
    sigmas: tuple | None = None
    max_sequence_length: int = 1024
    transparent_prompt: str = ""  # how a transparent result is asked for: "{prompt}" is the user's prompt
    mark_hint: str = ""  # appended to an edit prompt whose first reference carries red marks
    lora_generate: dict | None = field(default=None, hash=False)  # {repo, weight_name, scale}: fused at load
    lora_edit: dict | None = field(default=None, hash=False)
    scheduler: dict | None = field(default=None, hash=False)  # scheduler config overrides (LoRA presets)

    @property
    def one_pipeline(self) -> bool:
        """2.1 generates and edits with one pipeline; the 20B family uses two."""
        return self.generate_pipeline == self.edit_pipeline

    @property
    def ratios(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.sizes)

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.tiers)

    def with_checkpoints(self, path: str, family_label: str | None = None) -> ModelSpec:
        """This spec pointed at a local folder or Hub id (``--model PATH --family NAME``)."""
        from dataclasses import replace

        gen, edit = path, path
        if not self.one_pipeline:
            p = Path(path)
            if (p / "generate").is_dir() and (p / "edit").is_dir():
                gen, edit = str(p / "generate"), str(p / "edit")
        return replace(
            self,
            key=f"{self.family}:{path}",
            label=family_label or f"{self.label} from {path}",
            generate_checkpoint=gen,
            edit_checkpoint=edit,
            tiny=False,
        )


def _spec(key: str, data: dict) -> ModelSpec:
    if data.get("family") not in FAMILIES:
        raise ValueError(f"model {key!r}: unknown family {data.get('family')!r}")
    unknown = set(data) - set(ModelSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"model {key!r}: unknown field(s) {', '.join(sorted(unknown))} in models.toml")
    return ModelSpec(
        **{
            **data,
            "key": key,
            "tiers": tuple((name, int(side)) for name, side in data["tiers"].items()),
            "sizes": tuple((ratio, (int(wh[0]), int(wh[1]))) for ratio, wh in data["sizes"].items()),
            "sigmas": tuple(data["sigmas"]) if data.get("sigmas") else None,
            "generate_checkpoint": data.get("generate_checkpoint"),
            "edit_checkpoint": data.get("edit_checkpoint"),
        }
    )


@dataclass(frozen=True)
class Registry:
    models: dict = field(hash=False)
    default_gpu: str = "qwen-image-2.1"
    default_cpu: str = "tiny"

    def get(self, key: str) -> ModelSpec:
        try:
            return self.models[key]
        except KeyError:
            names = ", ".join(sorted(self.models))
            raise KeyError(f"unknown model {key!r}; known models: {names}") from None

    def by_family(self, family: str, tiny: bool = False) -> ModelSpec:
        for spec in self.models.values():
            if spec.family == family and spec.tiny == tiny and spec.lora_generate is None and not spec.sigmas:
                return spec
        raise KeyError(f"no model of family {family!r}")


@cache
def load_registry(path: Path | None = None) -> Registry:
    data = tomllib.loads(Path(path or CONFIG_DIR / "models.toml").read_text())
    models = {key: _spec(key, entry) for key, entry in data["models"].items()}
    return Registry(models=models, default_gpu=data["default_gpu"], default_cpu=data["default_cpu"])


def resolve_model(model: str, family: str | None = None, cuda: bool = False) -> ModelSpec:
    """Turn ``--model`` (+ ``--family``) into a spec.

    ``auto`` picks the default for the hardware; a registry key names a model; ``tiny`` with a family picks that
    family's tiny model; anything else is a local folder or Hub id and needs ``--family``.
    """
    reg = load_registry()
    if model == "auto":
        model = reg.default_gpu if cuda else reg.default_cpu
    if model == "tiny" and family:
        return reg.by_family(family, tiny=True)
    if model in reg.models:
        spec = reg.get(model)
        if family and family != spec.family:
            raise ValueError(f"model {model!r} is of family {spec.family!r}, not {family!r}")
        return spec
    if not family:
        raise ValueError(
            f"{model!r} is not a known model name; to load a local folder or Hub id pass --family "
            f"({' or '.join(FAMILIES)})"
        )
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose {' or '.join(FAMILIES)}")
    return reg.by_family(family).with_checkpoints(model)
