"""A one-step run on a scheduler that stretches its schedule to a terminal sigma.

The Qwen-Image and Qwen-Image-2.1 checkpoints ship ``shift_terminal = 0.02``: diffusers' flow-matching scheduler
stretches the sigma schedule so that its last sigma before 0 is 0.02. With one step the only sigma is 1.0, both first
and last, and the stretch divides 0 by 0 (``stretch_shift_to_terminal``): NaN sigmas, a NaN latent and an "invalid
image" for every one-step request (diffusers issue #14411, not fixed in 0.42). There is nothing to stretch in a
one-step schedule, so such a run goes from sigma 1.0 to 0 unstretched, as the upstream fix does.
"""

from __future__ import annotations

from contextlib import contextmanager


def stretch_fails(scheduler_config, steps: int) -> bool:
    """True when ``steps`` denoising steps would give NaN sigmas with this scheduler configuration."""
    return steps == 1 and bool(scheduler_config.get("shift_terminal"))


@contextmanager
def one_step_safe(pipe, steps: int):
    """Within the block, ``pipe`` runs ``steps`` steps (a custom grid's length included) with finite sigmas; its
    scheduler is restored afterwards."""
    scheduler = pipe.scheduler
    if not stretch_fails(scheduler.config, steps):
        yield
        return
    pipe.scheduler = type(scheduler).from_config({**scheduler.config, "shift_terminal": None})
    try:
        yield
    finally:
        pipe.scheduler = scheduler
