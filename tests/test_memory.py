"""Nothing the server keeps per job, per owner or per session grows without bound (counts, not RSS: bench/soak.py
measures the memory of the launched app)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from PIL import Image

from conversations.jobs import JobManager, RateLimiter
from conversations.owners import Owners, OwnerTokens
from conversations.store import Store
from qwen_image.backend import Progress
from qwen_image.generation import GenerationRequest
from ui.context import AppContext
from ui.sessions import SessionMemo

OWNER = "anon-" + "c" * 24


class PreviewingBackend:
    """Two steps, a live preview on the first; the request carries a reference image, like an edit."""

    def resolve(self, request):
        image = Image.new("RGB", (32, 32), "blue")
        return SimpleNamespace(prompt=request.prompt, images=(image,), settings=lambda: {"prompt": request.prompt})

    def estimate_seconds(self, resolved):
        return 1.0

    def generate(self, resolved, on_progress=None, cancel=None):
        on_progress(Progress("denoising", 1, 2, preview=Image.new("RGB", (8, 8), "green")))
        on_progress(Progress("denoising", 2, 2))
        return SimpleNamespace(images=[Image.new("RGB", (16, 16), "red")], seeds=[1], timings={}, notes=())


def run_jobs(jobs: JobManager, store: Store, count: int) -> list:
    store.ensure_owner(OWNER)
    conv = store.create_conversation(OWNER)
    ends, most = [], 0
    for i in range(count):
        snap = jobs.submit(OWNER, conv, jobs.backend.resolve(GenerationRequest(prompt=f"job {i}")), [])
        ends.append(list(jobs.follow(OWNER, snap.id, timeout=30))[-1])
        most = max(most, jobs.tracked())
    return ends, most


def test_a_soak_of_100_jobs_keeps_a_bounded_job_table(tmp_path):
    store = Store(tmp_path)
    jobs = JobManager(PreviewingBackend(), store, keep_finished=10)
    try:
        ends, most = run_jobs(jobs, store, 100)
        assert [e.state for e in ends] == ["done"] * 100
        assert most <= 11  # the ten kept + the one running
        assert jobs.tracked() == 10
        # the latest ones are still readable by a page that has not looked yet, without their heavy parts
        last = jobs.get(OWNER, ends[-1].id)
        assert last is not None and last.state == "done" and last.progress.preview is None
        assert all(job.request is None for job in jobs._jobs.values())
        assert jobs.get(OWNER, ends[0].id) is None  # forgotten
        assert len(store.get_conversation(OWNER, ends[0].conversation_id).turns) == 100  # the results are kept
    finally:
        jobs.shutdown()
        store.close()


def test_a_finished_job_is_forgotten_after_its_time(tmp_path):
    store = Store(tmp_path)
    jobs = JobManager(PreviewingBackend(), store, keep_finished_s=0.2)
    try:
        (first,), _ = run_jobs(jobs, store, 1)
        assert jobs.get(OWNER, first.id).state == "done"  # a page reading it at once still finds it
        assert list(jobs.follow(OWNER, first.id))[-1].state == "done"  # and so does a follower coming late
        time.sleep(0.3)
        assert jobs.forget_finished() == 1
        assert jobs.get(OWNER, first.id) is None and jobs.tracked() == 0
        assert jobs.estimate_seconds(first.id) == 0.0
    finally:
        jobs.shutdown()
        store.close()


def test_the_rate_limiter_forgets_owners_that_went_quiet():
    limiter = RateLimiter(limit=3, window=0.2)
    for i in range(100):
        limiter.check(f"anon-{i:024x}")
    assert limiter.tracked() == 100  # within the window every owner counts
    time.sleep(0.25)
    limiter.check(OWNER)
    assert limiter.tracked() == 1


def test_the_session_memo_keeps_the_most_recent_sessions_only():
    memo = SessionMemo(capacity=10)
    for i in range(100):
        memo.remember(f"s{i}", owner=f"anon-{i:024x}")
    memo.remember("s90", conv="c90")  # used again: the most recent now
    memo.remember("s100", owner="x")
    assert memo.size() == 10
    assert memo.recall("s90") == (f"anon-{90:024x}", "c90", None)
    assert memo.recall("s0").owner is None and memo.recall("s91").owner is None  # the least recently used went
    assert memo.recall(None).owner is None


def test_a_session_without_its_state_keeps_its_owner(tmp_path):
    store = Store(tmp_path)
    try:
        owners = Owners(OwnerTokens(tmp_path), store)
        ctx = AppContext(None, store, None, None, owners, None, tmp_path)
        page = SimpleNamespace(session_hash="tab-1", username=None)
        owner, token = ctx.restore(None, page)  # the page load
        assert ctx.owner(owner, page) == owner
        assert ctx.owner(None, page) == owner  # Gradio let the session's state go: still the same owner
        assert ctx.owner(None, SimpleNamespace(session_hash="tab-2", username=None)) != owner  # another session
        assert ctx.owner(None, None) != owner  # no session at all: a new owner each time
    finally:
        store.close()
