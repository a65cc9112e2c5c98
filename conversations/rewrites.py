"""Chat messages whose prompt the prompt enhancer is rewriting before their turn starts.

A chat message sent with "Enhance" on first has its prompt rewritten (seconds with the local enhancer, up to minutes
with a thinking model behind an endpoint), then its turn starts. As with jobs, the page never waits on that: the
rewrite runs here in the background; pages draw the rewrites under way in the conversation they show (the text so
far), can stop them, and once the turn has started its job takes over. A rewrite that ends without a turn (stopped,
or the turn was refused) keeps the user's words, so that the page can give them back.

Finished rewrites are kept for a short while (every page watching one sees how it ended), then forgotten, so memory
stays bounded however long the server runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from qwen_image.backend import Cancelled
from qwen_image.generation import ValidationError

log = logging.getLogger(__name__)

RUNNING, STARTED, STOPPED, FAILED = "running", "started", "stopped", "failed"


@dataclass(frozen=True)
class Rewrite:
    id: str
    owner: str
    conversation_id: str
    prompt: str  # the user's words, as sent
    attachments: int = 0  # images attached to the message
    text: str = ""  # the rewrite so far
    state: str = RUNNING  # running | started (its turn's job is ``job_id``) | stopped | failed (``error``)
    job_id: str | None = None
    error: str = ""
    ended_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


class Rewrites:
    """The rewrites under way (and those that ended in the last ``keep_s`` seconds, at most ``most`` of them)."""

    def __init__(self, keep_s: float = 120.0, most: int = 500):
        self.keep_s, self.most = keep_s, most
        self._items: dict[str, Rewrite] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def begin(
        self,
        owner: str,
        conversation_id: str,
        prompt: str,
        start: Callable[[Callable[[str], None], threading.Event], object],
        attachments: int = 0,
    ) -> Rewrite:
        """Run ``start(on_text, cancel)`` in the background: it rewrites the prompt (streaming the text so far to
        ``on_text``, stopping when ``cancel`` is set) and starts the turn, returning its job (with an ``id``). It may
        raise Cancelled (stopped) or ValidationError (the turn was refused: its message is kept)."""
        rewrite = Rewrite(uuid.uuid4().hex, owner, conversation_id, prompt, attachments)
        cancel = threading.Event()
        with self._lock:
            self._forget_old()
            self._items[rewrite.id] = rewrite
            self._cancel[rewrite.id] = cancel

        def on_text(text: str) -> None:
            self._update(rewrite.id, text=text)

        def run() -> None:
            try:
                job = start(on_text, cancel)
            except Cancelled:
                self._end(rewrite.id, STOPPED)
            except ValidationError as exc:
                self._end(rewrite.id, FAILED, error=str(exc))
            except Exception as exc:
                log.exception("a chat message could not start after its rewrite")
                self._end(rewrite.id, FAILED, error=f"Something went wrong: {exc}")
            else:
                self._end(rewrite.id, STARTED, job_id=getattr(job, "id", None))

        threading.Thread(target=run, name=f"rewrite-{rewrite.id[:8]}", daemon=True).start()
        return rewrite

    def active(self, owner: str, conversation_id: str | None = None) -> list[Rewrite]:
        """The owner's rewrites under way (in one conversation when given), oldest first."""
        with self._lock:
            return [
                r
                for r in self._items.values()
                if r.owner == owner and not r.finished and conversation_id in (None, r.conversation_id)
            ]

    def get(self, owner: str, rewrite_id: str | None) -> Rewrite | None:
        with self._lock:
            r = self._items.get(rewrite_id) if isinstance(rewrite_id, str) else None
        return r if r is not None and r.owner == owner else None

    def stop(self, owner: str, rewrite_id: str | None = None, conversation_id: str | None = None) -> int:
        """Stop the owner's rewrites under way (one, or those of one conversation, or all); how many were asked."""
        with self._lock:
            events = [
                self._cancel[r.id]
                for r in self._items.values()
                if r.owner == owner
                and not r.finished
                and rewrite_id in (None, r.id)
                and conversation_id in (None, r.conversation_id)
                and r.id in self._cancel
            ]
        for event in events:
            event.set()
        return len(events)

    def owns(self, cancel: threading.Event) -> bool:
        """Whether ``cancel`` is the stop of a rewrite under way here (``stop`` reaches it)."""
        with self._lock:
            return any(event is cancel for event in self._cancel.values())

    def _update(self, rewrite_id: str, **changes) -> None:
        with self._lock:
            r = self._items.get(rewrite_id)
            if r is not None and not r.finished:
                self._items[rewrite_id] = replace(r, **changes)

    def _end(self, rewrite_id: str, state: str, **changes) -> None:
        with self._lock:
            r = self._items.get(rewrite_id)
            if r is not None:
                self._items[rewrite_id] = replace(r, state=state, ended_at=time.monotonic(), **changes)
            self._cancel.pop(rewrite_id, None)

    def _forget_old(self) -> None:
        """(under the lock) Drop finished rewrites older than ``keep_s``, and the oldest beyond ``most``."""
        now = time.monotonic()
        ended = [r for r in self._items.values() if r.finished]
        for r in ended:
            if now - r.ended_at > self.keep_s:
                del self._items[r.id]
        ended = sorted((r for r in self._items.values() if r.finished), key=lambda r: r.ended_at)
        for r in ended[: max(0, len(self._items) - self.most)]:
            del self._items[r.id]
