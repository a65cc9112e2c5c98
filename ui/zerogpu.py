"""Hugging Face ZeroGPU: GPU work runs inside ``spaces.GPU`` with a duration computed from the job's size.

Active only when the ``spaces`` package is importable and the Space runs on ZeroGPU; elsewhere nothing here touches
CUDA or imports ``spaces``.
"""

from __future__ import annotations

import os

SECONDS_PER_MEGAPIXEL_STEP = 0.25  # H200 slice, bf16, Qwen-Image-2.1; the 20B family costs ~2.5x
OVERHEAD_S = 20


def zerogpu_active() -> bool:
    if os.environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "true"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def job_duration(request, family: str) -> int:
    """Seconds to reserve for one job: steps x megapixels x images x CFG passes, plus loading/decoding slack."""
    mp = request.width * request.height / 1e6
    passes = 2 if request.uses_cfg else 1
    factor = 2.5 if family == "qwen-image" else 1.0
    seconds = OVERHEAD_S + request.steps * mp * request.num_images * passes * factor * SECONDS_PER_MEGAPIXEL_STEP
    return int(min(300, max(30, seconds)))


def zerogpu_runner(jobs):
    """``jobs.run_streaming`` wrapped in spaces.GPU with a per-job duration."""
    import spaces

    def duration(job_id: str) -> int:
        job = jobs._jobs.get(job_id)
        return 60 if job is None else job_duration(job.request, jobs.engine.spec.family)

    return spaces.GPU(duration=duration)(jobs.run_streaming)
