"""Shared helpers of the benchmark scripts: machine info, markdown tables, result files, serialized sizes.

Benchmarks are not tests: they print a markdown table and write bench/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import struct
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GiB = 1024**3


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    from qwen_image.hardware import system_memory  # psutil, lowered to a container's cgroup limit, as the app reads it

    return round(system_memory()[0], 1)


def available_ram_gib() -> float:
    from qwen_image.hardware import system_memory

    return system_memory()[1]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict:
    """CPU, cores, RAM, library versions and the CUDA device (if any); imports torch."""
    import torch

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_device": None,
        "cuda_total_gib": None,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
    }
    for lib in ("diffusers", "transformers", "bitsandbytes"):
        try:
            info[lib] = __import__(lib).__version__
        except Exception:  # a missing optional library is only reported
            info[lib] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda_device"] = props.name
        info["cuda_total_gib"] = round(props.total_memory / GiB, 2)
    return info


def machine_line(info: dict) -> str:
    gpu = f"{info['cuda_device']} ({info['cuda_total_gib']} GiB)" if info.get("cuda_device") else "no CUDA GPU"
    return (
        f"{info['date']} | {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['ram_gib']} GiB RAM | torch {info['torch']}, diffusers {info.get('diffusers')}, "
        f"transformers {info.get('transformers')} | {gpu} | load avg {info['load_avg']}"
    )


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple]) -> str:
    """``columns``: (key, header) or (key, header, digits) tuples."""
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(row.get(c[0]), *c[2:]) for c in columns) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def write_results(name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def read_results(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- serialized sizes --------------------------------------------------------------------------------------------------
def safetensors_tensors(path: Path) -> dict[str, int]:
    """Tensor name -> stored bytes, read from a .safetensors header (no tensor data is loaded)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = end - start
    return out


def folder_tensors(folder: Path) -> dict[str, int]:
    """All tensors of every .safetensors file under ``folder``."""
    out: dict[str, int] = {}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        out.update(safetensors_tensors(path))
    return out


def group_bytes(tensors: dict[str, int], groups: dict[str, int]) -> dict:
    r"""Split serialized tensors into repeated units and the rest, and extrapolate to the full unit counts.

    ``groups``: a regular expression matching a repeated unit's tensor names, with the unit index as its one group
    (e.g. r"(?:^|\.)layers\.(\d+)\.") -> the full model's count of units. Returns, per pattern, the units present
    and their mean bytes; "lm_head" bytes; "fixed" bytes (everything else); "measured" (all); and "full" /
    "full_no_lm_head": the extrapolated total of the full-size model.
    """
    import re

    compiled = {pattern: re.compile(pattern) for pattern in groups}
    units: dict[str, dict[int, int]] = {p: {} for p in groups}
    fixed = lm_head = 0
    for name, size in tensors.items():
        if name.startswith("lm_head."):
            lm_head += size
            continue
        for pattern, regex in compiled.items():
            match = regex.search(name)
            if match:
                index = int(match.group(1))
                units[pattern][index] = units[pattern].get(index, 0) + size
                break
        else:
            fixed += size
    out = {"fixed": fixed, "lm_head": lm_head, "units": {}}
    full = fixed
    for pattern, count in groups.items():
        present = units[pattern]
        mean = sum(present.values()) / len(present) if present else 0
        out["units"][pattern] = {"present": len(present), "full": count, "bytes_each": mean}
        full += mean * count
    out["full_no_lm_head"] = full
    out["full"] = full + lm_head
    out["measured"] = sum(tensors.values())
    return out


def quiet_libraries() -> None:
    """Offline, and only errors from transformers, bitsandbytes and diffusers (no progress bars) in the tables' way."""
    import logging

    import transformers

    from qwen_image.loader import quiet_progress_bars

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    for name in ("bitsandbytes", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def save_bf16(build, folder: Path) -> None:
    """``build()`` (a random-weight module, seeded) materialized in bf16 directly (no float32 copy), then
    ``save_pretrained(folder)`` and freed."""
    import gc

    import torch

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = build()
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    del model
    gc.collect()
