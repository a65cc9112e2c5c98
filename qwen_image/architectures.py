"""Model architectures kept as data in configs/real/*.toml, and building their modules.

The planner counts parameters on the meta device from these configs (no weights needed); the tiny builder and the
GPU benchmarks instantiate them with random weights. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# configs/ at the repository root; an installed package carries it as qwen_image/configs
CONFIG_DIR = _HERE / "configs" if (_HERE / "configs").is_dir() else _HERE.parent / "configs"
COMPONENTS = ("text_encoder", "transformer", "vae")


@dataclass(frozen=True)
class ComponentArch:
    name: str
    class_name: str
    kwargs: dict = field(hash=False, compare=False)
    config_class: str | None = None

    @property
    def is_transformers(self) -> bool:
        return self.config_class is not None


@dataclass(frozen=True)
class Architecture:
    name: str
    components: dict = field(hash=False, compare=False)  # component name -> ComponentArch
    text: dict = field(hash=False, compare=False)  # token-count facts for the activation model
    processor: dict = field(hash=False, compare=False)  # tiny models only: image processor settings

    def __getitem__(self, component: str) -> ComponentArch:
        return self.components[component]


@cache
def load_architecture(name: str) -> Architecture:
    path = CONFIG_DIR / "real" / f"{name}.toml"
    if not path.is_file():
        raise KeyError(f"no architecture config {path}")
    data = tomllib.loads(path.read_text())
    components = {
        comp: ComponentArch(
            name=comp,
            class_name=data[comp]["class"],
            kwargs=data[comp].get("kwargs", {}),
            config_class=data[comp].get("config_class"),
        )
        for comp in COMPONENTS
    }
    return Architecture(
        name=name, components=components, text=data.get("text", {}), processor=data.get("processor", {})
    )


def make_config(arch: ComponentArch, overrides: dict | None = None):
    """The transformers config object of a text encoder architecture."""
    import transformers

    kwargs = copy.deepcopy(arch.kwargs)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key].update(value)
        else:
            kwargs[key] = value
    return getattr(transformers, arch.config_class)(**kwargs)


def build_module(arch: ComponentArch, device: str = "meta", overrides: dict | None = None, dtype=None):
    """Instantiate one component; on "meta" no memory is allocated."""
    import torch

    with torch.device(device):
        if arch.is_transformers:
            import transformers

            config = make_config(arch, overrides)
            module = getattr(transformers, arch.class_name)(config)
        else:
            import diffusers

            kwargs = copy.deepcopy(arch.kwargs)
            kwargs.update(overrides or {})
            module = getattr(diffusers, arch.class_name)(**kwargs)
    if dtype is not None and device != "meta":
        module = module.to(dtype)
    return module.eval()
