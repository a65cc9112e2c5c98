"""What the machine has: CUDA device, free VRAM, system RAM. Only touches CUDA when asked."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def _meminfo() -> tuple[float, float]:
    total = avail = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                kib = float(value.split()[0])
                if key == "MemTotal":
                    total = kib / 1024**2
                elif key == "MemAvailable":
                    avail = kib / 1024**2
    except OSError:
        try:
            total = avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
        except (ValueError, OSError, AttributeError):
            total = avail = 16.0
    return total, avail or total


def detect() -> Hardware:
    ram_total, ram_avail = _meminfo()
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
