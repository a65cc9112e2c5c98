"""The conversation list as people read it: grouped by date (Today, Yesterday, Previous 7 days, Older), a page at a
time. Pure functions over ``ConversationSummary`` records; the page's time zone is the browser's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

GROUPS = ("today", "yesterday", "week", "older")
PAGE = 50  # conversations per page of the list


def date_group(updated_at: float, now: float, utc_offset_minutes: int = 0) -> str:
    """Which group a conversation last changed at ``updated_at`` (epoch seconds) falls in, seen from ``now`` in a
    time zone ``utc_offset_minutes`` east of UTC."""
    shift = timedelta(minutes=utc_offset_minutes)
    day = (datetime.fromtimestamp(updated_at, UTC) + shift).date()
    today = (datetime.fromtimestamp(now, UTC) + shift).date()
    age = (today - day).days
    if age <= 0:
        return "today"
    if age == 1:
        return "yesterday"
    if age <= 7:
        return "week"
    return "older"


def grouped(summaries: Sequence, now: float, utc_offset_minutes: int = 0) -> list[tuple[str, list]]:
    """(group, summaries) in list order, empty groups left out (the summaries come newest first)."""
    out: dict[str, list] = {}
    for s in summaries:
        out.setdefault(date_group(s.updated_at, now, utc_offset_minutes), []).append(s)
    return [(g, out[g]) for g in GROUPS if g in out]


def page_size(pages: int) -> int:
    """How many conversations ``pages`` pages of the list hold (at least one page)."""
    return PAGE * max(1, int(pages or 1))
