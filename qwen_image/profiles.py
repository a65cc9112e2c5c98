"""Memory profiles (configs/profiles.toml) as frozen dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import cache

from .architectures import CONFIG_DIR

PRECISIONS_TE = ("full", "int8", "nf4")
PRECISIONS_T = ("full", "fp8", "int8", "nf4")
OFFLOADS = ("none", "model", "group", "sequential")
TILING = ("auto", "on", "off")


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    card_gb: float
    device: str
    dtype: str
    text_encoder: str
    transformer: str
    offload: str
    vae_tiling: str = "auto"
    vae_slicing: bool = True
    group_blocks: int = 1
    auto: bool = True

    def __post_init__(self):
        for value, allowed, what in (
            (self.text_encoder, PRECISIONS_TE, "text_encoder"),
            (self.transformer, PRECISIONS_T, "transformer"),
            (self.offload, OFFLOADS, "offload"),
            (self.vae_tiling, TILING, "vae_tiling"),
        ):
            if value not in allowed:
                raise ValueError(f"profile {self.name!r}: {what} must be one of {allowed}, not {value!r}")
        if self.device == "cpu" and (self.offload != "none" or self.transformer in ("int8", "nf4")):
            raise ValueError(f"profile {self.name!r}: on the CPU only offload 'none' and transformer full/fp8 work")

    @property
    def dtype_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    def summary(self) -> str:
        te = {"full": self.dtype, "int8": "8-bit", "nf4": "nf4"}[self.text_encoder]
        tr = {"full": self.dtype, "fp8": "fp8", "int8": "8-bit", "nf4": "nf4"}[self.transformer]
        return f"text encoder {te}, transformer {tr}, offload {self.offload}, VAE tiling {self.vae_tiling}"


@cache
def _raw() -> dict:
    return tomllib.loads((CONFIG_DIR / "profiles.toml").read_text())["profiles"]


def profile_names() -> tuple[str, ...]:
    return tuple(_raw())


def get_profile(name: str, family: str | None = None) -> Profile:
    """The named profile, with the family's overrides applied."""
    raw = _raw()
    if name not in raw:
        raise KeyError(f"unknown profile {name!r}; choose one of {', '.join(raw)}")
    data = {k: v for k, v in raw[name].items() if k != "family"}
    profile = Profile(name=name, **data)
    overrides = raw[name].get("family", {}).get(family or "", {})
    return replace(profile, **overrides) if overrides else profile


def gpu_profiles(family: str) -> list[Profile]:
    """CUDA profiles in order of preference (most resident first) that the automatic choice may use."""
    return [p for p in (get_profile(n, family) for n in profile_names()) if p.device == "cuda" and p.auto]
