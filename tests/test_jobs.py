"""The job manager on its own, with a stand-in engine (no model needed)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from PIL import Image

from conversations.jobs import JobManager
from conversations.store import Store
from qwen_image.engine import Progress
from qwen_image.generation import GenerationRequest

OWNER = "anon-" + "b" * 24


class FastEngine:
    """Reports many denoising steps in quick succession, like the tiny model does."""

    def __init__(self, steps: int, step_seconds: float):
        self.steps, self.step_seconds = steps, step_seconds

    def resolve(self, request):
        return SimpleNamespace(prompt=request.prompt, images=(), settings=lambda: {"prompt": request.prompt})

    def generate(self, resolved, on_progress=None, cancel=None):
        for i in range(1, self.steps + 1):
            time.sleep(self.step_seconds)
            on_progress(Progress("denoising", i, self.steps))
        return SimpleNamespace(
            images=[Image.new("RGB", (16, 16), "red")], seeds=[1], timings={"total": 0.1}, notes=("a note",)
        )


def follow_all(engine, tmp_path, **follow_kwargs):
    store = Store(tmp_path)
    jobs = JobManager(engine, store)
    try:
        store.ensure_owner(OWNER)
        conv = store.create_conversation(OWNER)
        snap = jobs.submit(OWNER, conv, engine.resolve(GenerationRequest(prompt="fast")), [])
        return list(jobs.follow(OWNER, snap.id, timeout=60, **follow_kwargs))
    finally:
        jobs.shutdown()
        store.close()


def test_fast_progress_is_coalesced_but_every_state_change_arrives(tmp_path):
    seen = follow_all(FastEngine(steps=200, step_seconds=0.002), tmp_path, every=0.1)
    states = [s.state for s in seen]
    assert states[-1] == "done" and seen[-1].notes == ("a note",)
    assert "running" in states
    # 200 steps in ~0.4 s: a handful of progress snapshots, not 200
    progress = [s for s in seen if s.state == "running" and s.progress is not None]
    assert 1 <= len(progress) < 40
    steps = [s.progress.step for s in progress]
    assert steps == sorted(steps)


def test_slow_steps_are_each_shown(tmp_path):
    seen = follow_all(FastEngine(steps=4, step_seconds=0.3), tmp_path, every=0.1)
    steps = [s.progress.step for s in seen if s.state == "running" and s.progress is not None]
    assert steps == [1, 2, 3, 4]
    assert seen[-1].state == "done"


class PreviewEngine(FastEngine):
    """A live preview after step 1 only, like the engine's every-few-steps previews."""

    def generate(self, resolved, on_progress=None, cancel=None):
        for i in range(1, self.steps + 1):
            time.sleep(self.step_seconds)
            preview = Image.new("RGB", (8, 8), "green") if i == 1 else None
            on_progress(Progress("denoising", i, self.steps, preview=preview))
        return super().generate(resolved, lambda p: None, cancel)


def test_the_latest_live_preview_stays_until_the_next(tmp_path):
    seen = follow_all(PreviewEngine(steps=4, step_seconds=0.3), tmp_path, every=0.1)
    running = [s.progress for s in seen if s.state == "running" and s.progress is not None]
    assert [p.step for p in running] == [1, 2, 3, 4]
    assert all(p.preview is not None and p.preview.getpixel((0, 0)) == (0, 128, 0) for p in running)


class GatedEngine(FastEngine):
    """Each job waits until released, so that the test sees how many run at once."""

    def __init__(self):
        super().__init__(steps=1, step_seconds=0)
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def generate(self, resolved, on_progress=None, cancel=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(30)
        with self.lock:
            self.running -= 1
        return super().generate(resolved, on_progress, cancel)


def test_a_backend_that_runs_several_jobs_gets_as_many_workers(tmp_path):
    engine = GatedEngine()
    store = Store(tmp_path)
    jobs = JobManager(engine, store, workers=3)
    try:
        store.ensure_owner(OWNER)
        conv = store.create_conversation(OWNER)
        snaps = [jobs.submit(OWNER, conv, engine.resolve(GenerationRequest(prompt=f"job {i}")), []) for i in range(4)]
        deadline = time.monotonic() + 30
        while engine.most < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert engine.most == 3  # three at once, the fourth waits
        assert sum(s.state == "queued" for s in (jobs.get(OWNER, s.id) for s in snaps)) == 1
        engine.release.set()
        assert [list(jobs.follow(OWNER, s.id, timeout=30))[-1].state for s in snaps] == ["done"] * 4
    finally:
        engine.release.set()
        jobs.shutdown()
        store.close()
