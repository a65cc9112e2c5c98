"""What the machine has: CUDA device, free VRAM, system RAM (a container's memory limit included). Only touches CUDA
when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GiB = 1024**3


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    gpu_name: str
    vram_total_gb: float
    vram_free_gb: float
    ram_total_gb: float
    ram_available_gb: float

    def describe(self) -> str:
        if self.cuda:
            return (
                f"{self.gpu_name}, {self.vram_free_gb:.1f} of {self.vram_total_gb:.1f} GiB free; "
                f"RAM {self.ram_available_gb:.0f} of {self.ram_total_gb:.0f} GiB available"
            )
        return f"no CUDA GPU; RAM {self.ram_available_gb:.0f} of {self.ram_total_gb:.0f} GiB available"


PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge page-aligned number


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in the v1 memory hierarchy (None where absent)."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # v2 writes "max" for no limit


def _stat(path: Path) -> dict[str, int]:
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
    except OSError:
        return {}


def _chain(base: Path, cgroup: str) -> list[Path]:
    """The cgroup's folder and its ancestors up to the hierarchy's root, as mounted here (in a container with its
    own cgroup namespace the process's path may not exist; the root then is the container's cgroup)."""
    parts = [p for p in cgroup.split("/") if p]
    folders = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in folders if f.is_dir()]


def cgroup_memory(proc_cgroup: Path | None = None, root: Path | None = None) -> tuple[int, int] | None:
    """(limit, usage) in bytes of the tightest cgroup memory limit over this process's cgroup and its ancestors, v2
    or v1; usage without the reclaimable page cache (inactive files), as container runtimes count it. None when
    no limit applies."""
    proc_cgroup = proc_cgroup or PROC_CGROUP
    root = root or CGROUP_ROOT
    v2, v1 = _cgroup_paths(proc_cgroup)
    hierarchies = []
    if v2 is not None:
        hierarchies.append((root, v2, "memory.max", "memory.current", "inactive_file"))
    if v1 is not None:
        hierarchies.append(
            (root / "memory", v1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        )
    best = None
    for base, path, limit_file, usage_file, inactive in hierarchies:
        for folder in _chain(base, path):
            limit = _read_int(folder / limit_file)
            if limit is None or limit >= _UNLIMITED:
                continue
            usage = max(0, (_read_int(folder / usage_file) or 0) - _stat(folder / "memory.stat").get(inactive, 0))
            if best is None or limit - usage < best[0] - best[1]:
                best = (limit, usage)
    return best


def system_memory() -> tuple[float, float]:
    """(total, available) GiB of system RAM this process can use: psutil's figures for the machine (any OS), lowered
    to the cgroup memory limit of a container."""
    import psutil

    vm = psutil.virtual_memory()
    total, available = vm.total, vm.available
    limited = cgroup_memory()
    if limited is not None:
        limit, usage = limited
        total = min(total, limit)
        available = min(available, max(0, limit - usage))
    return total / GiB, available / GiB


def detect() -> Hardware:
    ram_total, ram_avail = system_memory()
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return Hardware(True, torch.cuda.get_device_name(), total / GiB, free / GiB, ram_total, ram_avail)
    except Exception:  # a broken driver must not stop the app from starting on the CPU
        pass
    return Hardware(False, "", 0.0, 0.0, ram_total, ram_avail)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
