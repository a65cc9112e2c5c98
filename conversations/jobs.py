"""Server-owned generation jobs: they outlive the browser connection that asked for them.

A job is recorded as a running turn in the store before it is queued; one worker thread runs jobs in order through
the backend (``qwen_image.backend.Backend``); the result (or the failure, or the cancellation) is written into the
turn. A page that reloads finds the job again with ``active()`` and follows it with ``watch()``. Only the owner of a
job can see or cancel it.

Where GPU time is handed out per call (Hugging Face ZeroGPU), there is no worker: ``gpu_slot`` wraps the job runner,
and ``watch()`` runs the job inside the caller's slot.

Nothing grows without bound: a finished job drops its request (reference images) and live preview at once, and is
forgotten ``KEEP_FINISHED_S`` seconds after it ended (or sooner when more than ``KEEP_FINISHED`` have ended since); by
then every page that follows it has read its end (the result itself is in the store).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from qwen_image.backend import Backend, BackendError, Cancelled, Progress
from qwen_image.generation import ResolvedRequest, ValidationError

from .faults import StorageError
from .store import Store

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled")
# How long a finished job stays readable: a follower polls every 0.25 s and the chat page every 0.5 s, but a browser
# throttles a hidden tab's timer to about once a minute. The count bounds memory whatever the rate of jobs.
KEEP_FINISHED_S = 300.0
KEEP_FINISHED = 500
SAVE_ATTEMPTS = 3  # a result waits for a locked database this many busy timeouts before its turn fails
RETRY_ENDS_S = 2.0  # how often the end of a turn the store could not take (a storage fault) is offered again


class Busy(ValidationError):
    """The queue is full or the owner is over the rate limit; try again later."""


@dataclass(frozen=True)
class JobSnapshot:
    id: str
    owner: str
    conversation_id: str
    turn_id: str
    state: str  # queued | running | done | failed | cancelled
    position: int = 0  # jobs ahead of this one while queued
    progress: Progress | None = None
    error: str = ""
    notes: tuple = ()
    created_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass
class _Job:
    snapshot: JobSnapshot
    request: ResolvedRequest | None  # None once the job has ended
    settings: dict
    cancel: threading.Event
    claimed: bool = False  # ZeroGPU: a watcher is running it


class RateLimiter:
    """At most ``limit`` submissions per ``window`` seconds per owner (0 disables)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit, self.window = limit, window
        self._swept = time.monotonic()
        self._hits: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._exempt: set[str] = set()

    def exempt(self, owner: str) -> None:
        """Never limit ``owner`` (a trusted client, such as the holder of the API key)."""
        self._exempt.add(owner)

    def check(self, owner: str) -> None:
        if self.limit <= 0 or owner in self._exempt:
            return
        now = time.monotonic()
        with self._lock:
            self._sweep(now)
            hits = self._hits.setdefault(owner, deque())
            while hits and now - hits[0] > self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                wait = self.window - (now - hits[0])
                raise Busy(f"Too many requests: at most {self.limit} per minute. Try again in {wait:.0f} s.")
            hits.append(now)

    def _sweep(self, now: float) -> None:
        """Forget the owners with no hit inside the window (once per window), so that one-off callers do not pile up."""
        if now - self._swept < self.window:
            return
        self._swept = now
        for owner in [o for o, hits in self._hits.items() if not hits or now - hits[-1] > self.window]:
            del self._hits[owner]

    def tracked(self) -> int:
        """How many owners are remembered (for the memory tests)."""
        return len(self._hits)


class JobManager:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        max_queue: int = 32,
        rate_limit: int = 0,
        workers: int = 1,
        gpu_slot: Callable[[Callable, Callable], Callable] | None = None,
        keep_finished_s: float = KEEP_FINISHED_S,
        keep_finished: int = KEEP_FINISHED,
    ):
        """``workers``: jobs run at once (the backend's ``capabilities.concurrent_jobs``). ``gpu_slot(run, estimate)``
        (ZeroGPU): wraps ``run(job_id)`` so that it runs in a GPU slot sized by ``estimate(job_id)`` seconds; jobs then
        run in ``watch()`` instead of worker threads. A finished job stays readable for ``keep_finished_s`` seconds,
        at most ``keep_finished`` of them."""
        self.backend = backend
        self.store = store
        self.max_queue = max_queue
        self.limiter = RateLimiter(rate_limit)
        self._jobs: dict[str, _Job] = {}
        self._order: list[str] = []  # queued job ids, oldest first
        self._ended: deque[tuple[float, str]] = deque()  # (when, job id) of finished jobs still kept, oldest first
        self.keep_finished_s, self.keep_finished = keep_finished_s, keep_finished
        self._unrecorded: list[tuple] = []  # (owner, turn id, error, state) of ends the store could not take yet
        self._queue: queue.Queue = queue.Queue()
        self._changed = threading.Condition()
        self._in_slot = gpu_slot(self.run_streaming, self.estimate_seconds) if gpu_slot else None
        self._workers = 0 if gpu_slot else max(1, workers)
        for i in range(self._workers):
            threading.Thread(target=self._work, name=f"jobs-{i}", daemon=True).start()

    @property
    def runs_in_watcher(self) -> bool:
        """Whether jobs run only while someone watches them (ZeroGPU), not in worker threads."""
        return self._in_slot is not None

    # -- submitting ---------------------------------------------------------------------------------------------
    def submit(
        self,
        owner: str,
        conversation_id: str,
        resolved: ResolvedRequest,
        input_image_ids: list[str],
        prompt_label: str | None = None,
        version_of: str | None = None,
        notes: tuple = (),
    ) -> JobSnapshot:
        """Record a running turn and queue the job. Raises Busy (a ValidationError) when the server or owner is over
        its limits. ``notes``: lines for the user known before the job runs (e.g. the prompt enhancer's).

        ``resolved`` comes from ``backend.resolve``, which callers run first so that nothing is stored for an invalid
        request. ``version_of``: the turn this job makes another version of (regenerate), shown in its place.
        """
        with self._changed:
            waiting = len(self._order)
        if waiting >= self.max_queue:
            raise Busy(f"The server is busy ({waiting} jobs waiting). Try again in a minute.")
        self.limiter.check(owner)
        settings = resolved.settings()
        kind = "edit" if resolved.images else "generate"
        job_id = uuid.uuid4().hex
        self.forget_finished()
        self.record_ends()
        turn = self.store.start_turn(
            owner,
            conversation_id,
            kind,
            prompt_label or resolved.prompt,
            settings,
            list(input_image_ids),
            job_id=job_id,
            version_of=version_of,
        )
        if turn is None:
            raise ValidationError("That conversation no longer exists; start a new chat.")
        snap = JobSnapshot(
            job_id, owner, conversation_id, turn.id, "queued", notes=tuple(notes), created_at=time.time()
        )
        job = _Job(snap, resolved, settings, threading.Event())
        with self._changed:
            self._jobs[job_id] = job
            self._order.append(job_id)
            self._reposition()
            self._changed.notify_all()
        self._queue.put(job_id)
        return self._jobs[job_id].snapshot

    def _reposition(self) -> None:
        for i, jid in enumerate(self._order):
            job = self._jobs[jid]
            job.snapshot = replace(job.snapshot, position=i)

    # -- reading ------------------------------------------------------------------------------------------------
    def get(self, owner: str, job_id: str) -> JobSnapshot | None:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or job.snapshot.owner != owner:
            return None
        return job.snapshot

    def active(self, owner: str, conversation_id: str | None = None) -> list[JobSnapshot]:
        """The owner's unfinished jobs (optionally of one conversation), oldest first."""
        with self._changed:
            jobs = [j.snapshot for j in self._jobs.values()]
        return sorted(
            (
                s
                for s in jobs
                if s.owner == owner
                and not s.finished
                and (conversation_id is None or s.conversation_id == conversation_id)
            ),
            key=lambda s: s.created_at,
        )

    def follow(self, owner: str, job_id: str, poll: float = 0.25, timeout: float | None = None, every: float = 0.2):
        """Yield the job's snapshots as they change, ending with the terminal one.

        A change of state is yielded at once; progress-only changes at most once per ``every`` seconds (the
        latest one), so that a fast model's steps do not flood the page and starve the job of the GIL.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last, last_at = None, 0.0
        while True:
            snap = self.get(owner, job_id)
            if snap is None:
                return
            if snap != last:
                due = last is None or snap.state != last.state or time.monotonic() - last_at >= every
                if due:
                    yield snap
                    last, last_at = snap, time.monotonic()
            if snap.finished:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            wait = poll if snap == last else max(0.0, min(poll, last_at + every - time.monotonic()))
            with self._changed:
                if self.get(owner, job_id) == snap:
                    self._changed.wait(wait)

    def watch(self, owner: str, job_id: str) -> Iterator[JobSnapshot]:
        """The owner's job as it changes, ending with its final snapshot; under ZeroGPU the first watcher runs it."""
        if self._in_slot is not None and self.get(owner, job_id) is not None and self._claim(job_id):
            return self._in_slot(job_id)
        return self.follow(owner, job_id)

    def _claim(self, job_id: str) -> bool:
        with self._changed:
            job = self._jobs[job_id]
            claimed, job.claimed = job.claimed, True
        return not claimed

    def estimate_seconds(self, job_id: str) -> float:
        """The backend's estimate of a job's run time (0 for an unknown or finished job)."""
        job = self._jobs.get(job_id)
        return 0.0 if job is None or job.request is None else self.backend.estimate_seconds(job.request)

    def cancel(self, owner: str, job_id: str | None = None, conversation_id: str | None = None) -> int:
        """Stop the owner's job (or all of the owner's jobs in a conversation); returns how many were signalled."""
        count = 0
        with self._changed:
            for job in self._jobs.values():
                s = job.snapshot
                if s.owner != owner or s.finished:
                    continue
                if job_id is not None and s.id != job_id:
                    continue
                if conversation_id is not None and s.conversation_id != conversation_id:
                    continue
                job.cancel.set()
                count += 1
            self._changed.notify_all()
        return count

    # -- running ------------------------------------------------------------------------------------------------
    def _update(self, job: _Job, **changes) -> None:
        with self._changed:
            was_running = not job.snapshot.finished
            job.snapshot = replace(job.snapshot, **changes)
            if was_running and job.snapshot.finished:
                self._retire(job)
            self._changed.notify_all()

    def _retire(self, job: _Job) -> None:
        """A job just ended: keep only its small snapshot (no request, no live preview), for a while."""
        job.request = None
        p = job.snapshot.progress
        if p is not None and p.preview is not None:
            job.snapshot = replace(job.snapshot, progress=replace(p, preview=None))
        self._ended.append((time.monotonic(), job.snapshot.id))
        self.forget_finished()

    def _work(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=RETRY_ENDS_S if self._unrecorded else None)
            except queue.Empty:
                self.record_ends()
                continue
            if job_id is None:
                return
            try:
                self.execute(job_id)
            except Exception:  # the worker must survive anything
                log.exception("job %s crashed the worker loop", job_id)

    def execute(self, job_id: str) -> JobSnapshot:
        """Run one queued job to its end (the worker thread calls this; ZeroGPU calls it inline)."""
        job = self._jobs[job_id]
        with self._changed:
            if job_id in self._order:
                self._order.remove(job_id)
            self._reposition()
        s = job.snapshot
        if job.cancel.is_set():
            return self._finish(job, "cancelled", "stopped before it started")
        self._update(job, state="running", position=0)

        def on_progress(p: Progress) -> None:
            last = job.snapshot.progress  # a live preview comes every few steps: the latest one stays shown
            if p.preview is None and p.phase == "denoising" and last is not None and last.preview is not None:
                p = replace(p, preview=last.preview)
            self._update(job, progress=p)

        try:
            result = self.backend.generate(job.request, on_progress=on_progress, cancel=job.cancel)
        except Cancelled:
            return self._finish(job, "cancelled", "stopped")
        except (ValidationError, BackendError) as exc:
            return self._finish(job, "failed", str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            return self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
        try:
            saved = self._save(s, job.settings, result)
        except StorageError as exc:  # nothing of it was kept; the message says why and what to do
            return self._finish(job, "failed", f"The image could not be saved: {exc.reason}.")
        except Exception as exc:
            log.exception("could not save the result of job %s", job_id)
            return self._finish(job, "failed", f"the result could not be saved: {exc}")
        if saved is None:  # the turn was undone or its conversation deleted while the job ran
            self._update(job, state="cancelled", error="the turn was removed while it ran")
            return job.snapshot
        self._update(job, state="done", notes=(*s.notes, *result.notes))
        return job.snapshot

    def _save(self, s: JobSnapshot, settings: dict, result):
        """Store the result in its turn (None when the turn was removed meanwhile); a locked database is waited for
        ``SAVE_ATTEMPTS`` times, since the image cost GPU time."""
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                return self.store.finish_turn(
                    s.owner, s.turn_id, list(result.images), list(result.seeds), settings, result.timings
                )
            except StorageError as exc:
                if exc.kind != "locked" or attempt == SAVE_ATTEMPTS:
                    raise
                log.warning("the database is locked by another program; saving job %s again", s.id)

    def _finish(self, job: _Job, state: str, error: str) -> JobSnapshot:
        s = job.snapshot
        self._record_end((s.owner, s.turn_id, error, state))
        self._update(job, state=state, error=error)
        return job.snapshot

    def _record_end(self, end: tuple) -> bool:
        """Mark a failed or stopped job's turn in the store; an end the store cannot take now (a full disk, a read-only
        folder, a locked database) waits in ``_unrecorded`` for ``record_ends``."""
        owner, turn_id, error, state = end
        try:
            self.store.fail_turn(owner, turn_id, error, status=state)
            return True
        except Exception as exc:
            log.warning("could not record the end of turn %s yet (%s); will try again", turn_id, exc)
            with self._changed:
                self._unrecorded.append(end)
            return False

    def record_ends(self) -> int:
        """Offer the store the ends it could not take (every ``RETRY_ENDS_S`` seconds while any wait, and before each
        new job), so that no turn stays "running" once the fault clears; returns how many still wait."""
        with self._changed:
            ends, self._unrecorded = self._unrecorded, []
        for i, end in enumerate(ends):
            if not self._record_end(end):  # the fault is still there: the rest wait with it
                with self._changed:
                    self._unrecorded.extend(ends[i + 1 :])
                break
        return len(self._unrecorded)

    def run_streaming(self, job_id: str, poll: float = 0.25):
        """Run a job in a helper thread and yield its snapshots (ZeroGPU: called inside the GPU context)."""
        owner = self._jobs[job_id].snapshot.owner
        thread = threading.Thread(target=self.execute, args=(job_id,), daemon=True)
        thread.start()
        yield from self.follow(owner, job_id, poll)
        thread.join()

    def forget_finished(self) -> int:
        """Forget the jobs that ended more than ``keep_finished_s`` seconds ago, and the oldest beyond
        ``keep_finished``; returns how many were forgotten. Runs whenever a job is submitted or ends."""
        now, forgotten = time.monotonic(), 0
        older_than, keep = self.keep_finished_s, self.keep_finished
        with self._changed:
            while self._ended and (len(self._ended) > keep or now - self._ended[0][0] > older_than):
                _, job_id = self._ended.popleft()
                self._jobs.pop(job_id, None)
                forgotten += 1
        return forgotten

    def tracked(self) -> int:
        """Jobs known: queued, running, and finished ones still kept."""
        return len(self._jobs)

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._queue.put(None)
