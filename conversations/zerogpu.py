"""Hugging Face ZeroGPU: each job runs inside ``spaces.GPU`` with a duration sized to its work.

Active only when the ``spaces`` package is importable and the Space runs on ZeroGPU; elsewhere nothing here touches
CUDA or imports ``spaces``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

OVERHEAD_S = 20  # loading onto the GPU slot, encoding and decoding
MIN_S, MAX_S = 30, 300


def zerogpu_active() -> bool:
    if os.environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "true"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def job_duration(estimated_seconds: float) -> int:
    """Seconds to reserve for one job: the backend's estimate plus slack, within ZeroGPU's bounds."""
    return int(min(MAX_S, max(MIN_S, OVERHEAD_S + estimated_seconds)))


def gpu_slot(run: Callable, estimate: Callable[[str], float]) -> Callable:
    """``run(job_id)`` wrapped in spaces.GPU, reserving ``job_duration(estimate(job_id))`` seconds (for JobManager)."""
    import spaces

    return spaces.GPU(duration=lambda job_id: job_duration(estimate(job_id)))(run)
