"""The conversation store's records, SQLite schema and migrations, and the small helpers the store uses.

``PRAGMA user_version`` holds the number of migrations applied. ``MIGRATIONS`` is ordered: a fresh database runs all
of them, an older one only those it lacks; each runs in its own transaction together with the version bump, so a
failed migration leaves the database as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from qwen_image.atomic import atomic_write
from qwen_image.metadata import JSON_KEY

DB_NAME = "history.sqlite3"
BUSY_TIMEOUT_MS = 10_000
KINDS = ("generate", "edit")
STATUSES = ("running", "done", "failed", "cancelled")
UNTITLED = "New conversation"
TITLE_MAX = 200
AUTO_TITLE_MAX = 60
QUERY_MAX = 200
INTERRUPTED = "interrupted: the server stopped during this job"
MAX_INPUTS = 16
ERROR_MAX = 4000
JOB_ID_MAX = 200
ORPHAN_MIN_AGE_S = 3600.0
TEXT_CHUNK_MAX = 1 << 20
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}

_ID = re.compile(r"[0-9a-f]{32}")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
_RELPATH = re.compile(r"[0-9a-f]{16}/[0-9a-f]{32}\.png")
# C0/C1 controls, line/paragraph separators, zero-width and bidirectional formatting characters, lone surrogates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")

# -- schema -------------------------------------------------------------------------------------------------------

# v1: the first layout (no turn timings, errors or finish times; no image dimensions).
V1_STATEMENTS = (
    "CREATE TABLE owners (id TEXT PRIMARY KEY, created_at REAL NOT NULL)",
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
        title TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    "CREATE INDEX conversations_owner ON conversations(owner_id, updated_at)",
    """CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('generate', 'edit')),
        prompt TEXT NOT NULL,
        settings_json TEXT NOT NULL DEFAULT '{}',
        seed INTEGER,
        status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
        job_id TEXT,
        created_at REAL NOT NULL,
        UNIQUE (conversation_id, position))""",
    """CREATE TABLE images (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        turn_id TEXT REFERENCES turns(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('output', 'input')),
        position INTEGER NOT NULL DEFAULT 0,
        relpath TEXT NOT NULL UNIQUE,
        mode TEXT NOT NULL,
        seed INTEGER,
        created_at REAL NOT NULL)""",
    "CREATE INDEX images_conversation ON images(conversation_id)",
    "CREATE INDEX images_turn ON images(turn_id)",
    """CREATE TABLE turn_inputs (
        turn_id TEXT NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        PRIMARY KEY (turn_id, position))""",
    "CREATE INDEX turn_inputs_image ON turn_inputs(image_id)",
)

# v2: turn errors, finish times and timings; image dimensions; an index for startup recovery.
V2_STATEMENTS = (
    "ALTER TABLE turns ADD COLUMN error TEXT",
    "ALTER TABLE turns ADD COLUMN finished_at REAL",
    "ALTER TABLE turns ADD COLUMN timings_json TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE images ADD COLUMN width INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE images ADD COLUMN height INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX turns_status ON turns(status)",
)


# v3: result versions. Regenerating a turn adds a version of it (a turn row whose ``version_of`` is the original); the
# versions of a turn share its place in the conversation, and ``shown`` marks the one on screen (and edited next).
V3_STATEMENTS = (
    "ALTER TABLE turns ADD COLUMN version_of TEXT REFERENCES turns(id) ON DELETE CASCADE",
    "ALTER TABLE turns ADD COLUMN shown INTEGER NOT NULL DEFAULT 1",
    "CREATE INDEX turns_version_of ON turns(version_of)",
)


def _v1(conn: sqlite3.Connection, image_root: Path) -> None:
    for statement in V1_STATEMENTS:
        conn.execute(statement)


def _v2(conn: sqlite3.Connection, image_root: Path) -> None:
    for statement in V2_STATEMENTS:
        conn.execute(statement)
    # v1 did not record sizes: read them from the files' headers (0x0 stays for a file that is gone or unreadable)
    rows = conn.execute("SELECT id, relpath FROM images").fetchall()
    for image_id, relpath in rows:
        size = png_size(image_root / relpath) if valid_relpath(relpath) else None
        if size:
            conn.execute("UPDATE images SET width = ?, height = ? WHERE id = ?", (size[0], size[1], image_id))


def _v3(conn: sqlite3.Connection, image_root: Path) -> None:
    for statement in V3_STATEMENTS:  # every existing turn is an original, shown
        conn.execute(statement)


MIGRATIONS: tuple[Callable[[sqlite3.Connection, Path], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from an image file's header (nothing is decoded); None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError):
        return None


def user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, image_root: Path) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return the version it had before."""
    start = user_version(conn)
    if start > SCHEMA_VERSION:
        raise RuntimeError(
            f"The history database has schema version {start}, newer than this program knows ({SCHEMA_VERSION}); "
            "update the program or use another data folder."
        )
    for target in range(start + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if user_version(conn) < target:  # another process may have migrated meanwhile
                MIGRATIONS[target - 1](conn, image_root)
                conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start


def _casefold(value):
    """SQL ``casefold(text)`` for searching: Unicode case folding, NULs dropped (LIKE stops at a NUL)."""
    return value.casefold().replace("\x00", "") if isinstance(value, str) else value


def connect(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shareable between threads behind a lock; a write
    waits up to ``busy_timeout_s`` for a lock another program holds."""
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("casefold", 1, _casefold, deterministic=True)
    return conn


# -- pure helpers -------------------------------------------------------------------------------------------------


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(value) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def valid_owner(value) -> bool:
    return isinstance(value, str) and _OWNER.fullmatch(value) is not None


def valid_seed(value) -> bool:
    """A whole number SQLite can hold (booleans are not seeds)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def valid_relpath(value) -> bool:
    return isinstance(value, str) and _RELPATH.fullmatch(value) is not None


def owner_folder(owner: str) -> str:
    """The owner's image folder name: a hash prefix, so no user-controlled text ever reaches a path."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16]


def image_relpath(owner: str, image_id: str) -> str:
    return f"{owner_folder(owner)}/{image_id}.png"


def clean_text(text, limit: int) -> str | None:
    """``text`` on one line: unsafe characters become spaces, runs of white space one space; None when empty."""
    if not isinstance(text, str):
        return None
    text = " ".join(_UNSAFE.sub(" ", text).split())
    return text[:limit].rstrip() or None


def title_from_prompt(prompt, limit: int = AUTO_TITLE_MAX) -> str | None:
    """A conversation's automatic title: its first prompt on one line, cut at a word near ``limit`` characters."""
    text = clean_text(prompt, 10 * limit)
    if text is None or len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def display_title(title: str | None, first_prompt: str | None) -> str:
    return title or title_from_prompt(first_prompt) or UNTITLED


def encodable(text: str) -> bool:
    """Whether ``text`` can be stored (SQLite needs valid UTF-8: no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """``text`` with anything SQLite cannot store (lone surrogates) replaced by "?"."""
    return text if encodable(text) else text.encode("utf-8", "replace").decode("utf-8")


def like_pattern(query: str) -> str:
    """A LIKE pattern (ESCAPE '\\') finding ``query`` anywhere, casefolded, with % and _ taken literally."""
    text = _casefold(query).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{text}%"


# -- records and file helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    id: str
    conversation_id: str
    turn_id: str | None  # None for an image the user attached
    role: str  # "output" or "input"
    path: Path  # absolute
    width: int
    height: int
    mode: str
    seed: int | None
    position: int


@dataclass(frozen=True)
class Turn:
    id: str
    conversation_id: str
    position: int
    kind: str  # "generate" or "edit"
    prompt: str
    settings: dict
    seed: int | None
    status: str  # "running", "done", "failed" or "cancelled"
    error: str | None
    job_id: str | None
    created_at: float
    finished_at: float | None
    timings: dict
    inputs: tuple[ImageRecord, ...] = ()
    outputs: tuple[ImageRecord, ...] = ()
    version_of: str | None = None  # the original turn when this is a regenerated version of it
    shown: int = 1  # 1 for the version on screen in its place in the conversation
    version: int = 1  # this version's number among the turn's versions (1 = the original)
    version_ids: tuple[str, ...] = ()  # the ids of all versions of this turn, oldest first

    @property
    def versions(self) -> int:
        return max(1, len(self.version_ids))

    @property
    def root_id(self) -> str:
        """The id of the original turn (the same for all of its versions)."""
        return self.version_of or self.id


@dataclass(frozen=True)
class Conversation:
    id: str
    owner_id: str
    title: str  # the name given by the user, else the first prompt shortened, else "New conversation"
    created_at: float
    updated_at: float
    turns: tuple[Turn, ...] = ()  # one per place in the conversation: the version shown
    custom_title: str | None = None  # the name given by the user; None while the title is automatic

    def latest_output(self) -> ImageRecord | None:
        """The first image of the last turn (its version shown) that made images: what a follow-up message edits."""
        for turn in reversed(self.turns):
            if turn.outputs:
                return turn.outputs[0]
        return None


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    updated_at: float
    turn_count: int
    thumbnail: Path | None


def loads_dict(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dumps_dict(value, what: str) -> str:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict")
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} must be plain JSON data: {exc}") from None
    if not encodable(text):
        raise ValueError(f"{what} contains text that is not valid Unicode")
    return text


def png_ready(image):
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode in _PNG_MODES:
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _kept_text(image) -> dict[str, str]:
    """The settings text chunks an image carries (this app's or A1111-style), copied as they are."""
    info = getattr(image, "info", None) or {}
    keys = ("parameters", JSON_KEY)
    return {k: info[k] for k in keys if isinstance(info.get(k), str) and len(info[k]) <= TEXT_CHUNK_MAX}


def save_plain_png(image, path: Path) -> None:
    """Write ``image`` as PNG atomically, keeping the settings it carries from this app or an A1111-compatible tool."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in _kept_text(image).items():
        info.add_itxt(key, text)
    with atomic_write(path, ".png") as f:
        image.save(f, format="PNG", pnginfo=info)


def _from_row(cls, row, **computed):
    """A record whose fields are the row's columns of the same names, plus the ``computed`` ones."""
    return cls(**{f.name: row[f.name] for f in fields(cls) if f.name not in computed}, **computed)


def image_record(root: Path, row) -> ImageRecord:
    return _from_row(ImageRecord, row, path=root / row["relpath"])


def turn_record(row, inputs, outputs, versions: Sequence[str] = ()) -> Turn:
    """A turn from its row; ``versions``: the ids of all versions of its turn, oldest first (this one among them)."""
    settings, timings = loads_dict(row["settings_json"]), loads_dict(row["timings_json"])
    ids = tuple(versions) or (row["id"],)
    number = ids.index(row["id"]) + 1 if row["id"] in ids else 1
    return _from_row(
        Turn,
        row,
        settings=settings,
        timings=timings,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        version=number,
        version_ids=ids,
    )


def shown_turns(turns: Sequence[Turn]) -> tuple[Turn, ...]:
    """One turn per place in the conversation (ordered by the original's position): the version shown, else the
    newest."""
    groups: dict[str, list[Turn]] = {}
    for turn in sorted(turns, key=lambda t: t.position):
        groups.setdefault(turn.root_id, []).append(turn)
    out = []
    for versions in groups.values():
        shown = [t for t in versions if t.shown]
        out.append(shown[-1] if shown else versions[-1])
    return tuple(out)


def image_files(root: Path) -> list[Path]:
    """Plain files in the image folder and its owner folders (symbolic links are not followed)."""
    out = []
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            out += [Path(f.path) for f in os.scandir(entry.path) if f.is_file(follow_symlinks=False)]
        elif entry.is_file(follow_symlinks=False):
            out.append(Path(entry.path))
    return out
