"""What a Gradio session must not lose, kept small and bounded on the server.

Gradio keeps two things per session (every page load, every plain REST call, every new gradio_client ``Client``): the
``gr.State`` values, and a copy of every component's configuration built on the session's first event (about 250 KiB
for this page, measured). It keeps them for the ``state_session_capacity`` most recently used sessions (launch option,
10,000 by default: gigabytes) and drops the least recently used beyond that. ``gr.State(time_to_live=...)`` and the
clean-up an hour after a page closes delete only the State values, never that copy, so only the capacity bounds the
memory: the app sets it low (``--max-sessions``, ``MAX_SESSIONS``).

A session Gradio let go gets fresh, empty State on its next event. What a page or an API client cannot lose (who it
is, its open conversation, the image chosen to edit next) is therefore also kept here, by session, for many more
sessions at a few hundred bytes each; a session that comes back without its State gets these back. There is no
``demo.unload`` clean-up: it also fires when a live page's heartbeat connection drops and reconnects under the same
session, so an entry leaves only when ``capacity`` newer sessions have been used since.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

MAX_SESSIONS = 100  # Gradio's per-session copies kept (``state_session_capacity``): about 25 MiB for this page
REMEMBERED = 10_000  # sessions whose essentials are kept here: under 3 MiB


class Essentials(NamedTuple):
    owner: str | None = None
    conv: str | None = None
    branch: str | None = None


NOTHING = Essentials()


def session_of(request) -> str | None:
    """The Gradio session of a request (None outside one)."""
    value = getattr(request, "session_hash", None) if request is not None else None
    return value if isinstance(value, str) and value else None


class SessionMemo:
    def __init__(self, capacity: int = REMEMBERED):
        self.capacity = capacity
        self._kept: OrderedDict[str, Essentials] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, session: str | None) -> Essentials:
        """What was remembered for the session (empty fields when nothing is)."""
        if session is None:
            return NOTHING
        with self._lock:
            return self._kept.get(session, NOTHING)

    def remember(self, session: str | None, **changes) -> None:
        """Update the session's essentials (owner, conv, branch); the least recently used beyond ``capacity`` go."""
        if session is None:
            return
        with self._lock:
            kept = self._kept.pop(session, NOTHING)
            self._kept[session] = kept._replace(**changes)
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)

    def size(self) -> int:
        return len(self._kept)
