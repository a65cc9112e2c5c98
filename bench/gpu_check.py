"""The one GPU check: everything in this repository that needs a CUDA GPU, in one command, under 8 minutes.

    python bench/gpu_check.py --out DIR        # on a machine with one CUDA GPU (an H200 takes ~6-7 min)
    python bench/gpu_check.py --smoke --out DIR  # the same steps with the tiny models; runs on a CPU (~1 min)
    python bench/gpu_check.py --out DIR --only profiles --models qwen-image   # repeat one part

Steps, each in its own process (a crash or a hung CUDA call in one cannot take the others down) and each with its
own time limit inside the total:

1. the machine: nvidia-smi, torch / CUDA / library versions -> DIR/environment.json
2. the tests marked ``cuda`` (tests/test_gpu.py: bitsandbytes transformers, fp8, every offload mode, the 20B role
   switch, compile, attention backends, on the GPU) -> DIR/pytest_cuda.log, DIR/pytest_cuda.xml
3. bench/gpu_profiles.py at 1024x1024 for Qwen-Image-2.1 and Qwen-Image 20B (real sizes, random weights built on
   the GPU): peak memory per profile and per phase, s/step, each against the planner's prediction
   -> DIR/gpu_profiles.json, DIR/gpu_profiles.md
4. DIR/summary.md: what passed, what did not, and the table of measured vs predicted peaks.

It needs the packages of requirements.txt and requirements-dev.txt, no network (HF_HUB_OFFLINE=1 is set), and writes
nothing outside DIR (tiny test models are built under DIR/cache). Exit status 0 when every step ran and the tests
passed; 1 otherwise (the results are written either way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOTAL_S = 450  # the whole check stays under 8 minutes with this margin for start-up and the summary
PYTEST_S = 180  # a cap: the tiny-model tests take ~1-2 min, most of it one inductor compile
LAST_PROFILE_S = 60  # no new profile starts later than this before the end (a 20B profile takes ~30-40 s)
SMOKE_PROFILES = "48gb,24gb,12gb"  # no offload / model offload / block streaming; bf16, 8-bit and fp8 weights


def run_step(name: str, cmd: list[str], out: Path, timeout: float, env: dict) -> dict:
    """Run one step, its output into DIR/NAME.log; returns its outcome."""
    log = out / f"{name}.log"
    t0 = time.monotonic()
    with log.open("w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=max(1.0, timeout), check=False
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"step": name, "rc": rc, "seconds": round(time.monotonic() - t0, 1), "log": log.name}


def environment(out: Path) -> dict:
    info: dict = {"python": sys.version.split()[0]}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,pcie.link.gen.max", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not available ({type(exc).__name__})"
    code = (
        "import json, torch, diffusers, transformers, accelerate, bitsandbytes, psutil\n"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
        " 'cuda_available': torch.cuda.is_available(),"
        " 'device': torch.cuda.get_device_name() if torch.cuda.is_available() else None,"
        " 'diffusers': diffusers.__version__, 'transformers': transformers.__version__,"
        " 'accelerate': accelerate.__version__, 'bitsandbytes': bitsandbytes.__version__,"
        " 'cpus': psutil.cpu_count(), 'ram_gib': round(psutil.virtual_memory().total / 2**30, 1)}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    try:
        info.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        info["error"] = proc.stderr[-2000:]
    (out / "environment.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def pytest_counts(xml_path: Path) -> dict:
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def summary(out: Path, steps: list[dict], env_info: dict, tests: dict, profiles_name: str, smoke: bool) -> str:
    lines = [
        "# GPU check" + (" (SMOKE: tiny models)" if smoke else ""),
        "",
        f"Device: {env_info.get('device') or 'no CUDA GPU'} ({env_info.get('nvidia_smi', '')}); torch "
        f"{env_info.get('torch')}, CUDA {env_info.get('cuda')}, diffusers {env_info.get('diffusers')}, transformers "
        f"{env_info.get('transformers')}, bitsandbytes {env_info.get('bitsandbytes')}.",
        "",
        "| step | exit | seconds | log |",
        "|---|---|---|---|",
        *[f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['log']} |" for s in steps],
        "",
    ]
    if tests:
        lines.append(
            f"Tests marked cuda: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
            f"{tests['skipped']} skipped."
        )
        lines += [f"- FAILED {name}" for name in tests["failed_tests"]]
    else:
        lines.append("Tests marked cuda: no result (see pytest_cuda.log).")
    md = out / f"{profiles_name}.md"
    lines += ["", md.read_text() if md.is_file() else f"{profiles_name}: no result (see gpu_profiles.log)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for every result")
    parser.add_argument("--smoke", action="store_true", help="tiny models only (runs on a CPU)")
    parser.add_argument("--total-s", type=float, default=TOTAL_S, help="time for the whole check")
    parser.add_argument("--only", choices=["tests", "profiles"], help="run one step (e.g. to repeat it)")
    parser.add_argument("--models", help="gpu_profiles.py --models (default: both)")
    parser.add_argument("--profiles", help="gpu_profiles.py --profiles (default: every card profile)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), QWEN_IMAGE_CACHE=str(out / "cache"))

    env_info = environment(out)
    steps = []
    if args.only in (None, "tests"):
        pytest_cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
        pytest_cmd += ["--junitxml", str(out / "pytest_cuda.xml"), "tests"]
        steps.append(run_step("pytest_cuda", pytest_cmd, out, PYTEST_S, env))

    if args.only in (None, "profiles"):
        left = args.total_s - (time.monotonic() - t0)
        budget = max(0.0, left - LAST_PROFILE_S)
        profiles = [sys.executable, "bench/gpu_profiles.py", "--out", str(out), "--budget-s", str(budget)]
        if args.smoke:
            profiles += ["--smoke", "--profiles", args.profiles or SMOKE_PROFILES]
        elif args.profiles:
            profiles += ["--profiles", args.profiles]
        if args.models:
            profiles += ["--models", args.models]
        steps.append(run_step("gpu_profiles", profiles, out, left, env))

    tests = pytest_counts(out / "pytest_cuda.xml")
    name = "gpu_profiles_smoke" if args.smoke else "gpu_profiles"
    text = summary(out, steps, env_info, tests, name, args.smoke)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(
        json.dumps({"steps": steps, "tests": tests, "seconds": round(time.monotonic() - t0, 1)}, indent=2) + "\n"
    )
    print(text)
    ok = all(s["rc"] == 0 for s in steps) and (args.only == "profiles" or (tests and not tests["failed_tests"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
