"""Requests that come through the APIs (the OpenAI Images endpoints, the MCP tools) as turns of one owner.

They take the same path as the web UI's turns (``TurnService.start``: the same validation, the same job queue, so
API and browser users share the GPU fairly), and are stored like any other turn, each request in its own
conversation of the owner ``API_OWNER``. No browser user can see them: owner ids of browsers and logins have another
shape (``anon-...``, ``user-...``). The owner is exempt from the per-user rate limit (whoever holds the API key is
one trusted client, often another copy of this app serving many users); the queue bound still applies.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

from conversations.jobs import JobManager, JobSnapshot
from conversations.store import ImageRecord, Store
from conversations.turns import TurnImage, TurnService
from qwen_image.generation import GenerationRequest

API_OWNER = "api"


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def key_matches(token: str | None, key: str) -> bool:
    """Whether a request's bearer token is the API key (compared in constant time)."""
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


class ImageService:
    def __init__(self, turns: TurnService, jobs: JobManager, store: Store):
        self.turns = turns
        self.jobs = jobs
        self.store = store
        jobs.limiter.exempt(API_OWNER)

    @property
    def spec(self):
        return self.turns.backend.spec

    def start(self, request: GenerationRequest, images: Sequence = ()) -> JobSnapshot:
        """Validate and queue a request (a new conversation of the API owner); raises ValidationError (Busy
        included) with the user's message, having stored nothing."""
        self.store.ensure_owner(API_OWNER)
        return self.turns.start(API_OWNER, None, request, [TurnImage(img) for img in images])

    def current(self, snap: JobSnapshot) -> JobSnapshot | None:
        return self.jobs.get(API_OWNER, snap.id)

    def cancel(self, snap: JobSnapshot) -> None:
        self.jobs.cancel(API_OWNER, snap.id)

    def wait(self, snap: JobSnapshot, timeout: float | None = None) -> JobSnapshot:
        """Block until the job ends (or ``timeout``); its last snapshot."""
        last = snap
        deadline = None if timeout is None else time.monotonic() + timeout
        for now in self.jobs.follow(API_OWNER, snap.id, every=1.0):
            last = now
            if deadline is not None and time.monotonic() > deadline:
                break
        return last

    def outputs(self, snap: JobSnapshot) -> list[ImageRecord]:
        turn = self.store.get_turn(API_OWNER, snap.turn_id)
        return list(turn.outputs) if turn is not None else []
