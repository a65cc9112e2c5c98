"""Persistent conversations: SQLite rows under ``data_dir/history.sqlite3`` and PNG files under ``data_dir/images``.

Every method takes the owner first and only ever touches that owner's rows. An id that is malformed, missing or
someone else's gives the same answer (None, False or an empty list), so nothing tells one from the other. Image files
are named by random ids inside a folder named by a hash of the owner; no user text ever reaches a path. Files are
written (atomically) before the rows that point at them are committed, and removed only after the rows are gone.

One connection is shared by all threads behind a re-entrant lock; every write is one transaction. A full disk, a
read-only folder or a database locked by another program for longer than the busy timeout raise ``StorageError``
(``faults.py``), with every file and row of the failed write gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from qwen_image.atomic import atomic_copy
from qwen_image.metadata import image_settings, save_png

from . import store_schema as schema
from .faults import StorageError, storage_faults
from .store_schema import INTERRUPTED, Conversation, ConversationSummary, ImageRecord, Turn

__all__ = ["INTERRUPTED", "Conversation", "ConversationSummary", "ImageRecord", "StorageError", "Store", "Turn"]
log = logging.getLogger(__name__)


class Store:
    def __init__(self, data_dir: Path, busy_timeout_s: float = schema.BUSY_TIMEOUT_MS / 1000):
        """``busy_timeout_s``: how long a write waits for a lock held by another program before it gives up."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._root = self.data_dir / "images"
        self._root.mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._conn = schema.connect(self.data_dir / schema.DB_NAME, busy_timeout_s)
        try:
            schema.migrate(self._conn, self._root)
        except BaseException:
            self._conn.close()
            raise

    @property
    def image_root(self) -> Path:
        return self._root

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator:
        """One transaction under the lock (IMMEDIATE for writes); nested use joins the outer one."""
        with self._lock:
            conn = self._conn
            if conn.in_transaction:
                yield conn
                return
            with storage_faults():
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except Exception:  # SQLite rolls back on its own after a failed commit or I/O error
                            log.warning("rollback failed", exc_info=True)
                    raise

    def _unlink(self, relpaths: Sequence[str]) -> None:
        """Remove files (best effort: one that cannot go now is an orphan, swept at the next start)."""
        for relpath in relpaths:
            if schema.valid_relpath(relpath):
                try:
                    (self._root / relpath).unlink(missing_ok=True)
                except OSError:
                    log.warning("could not remove %s", relpath, exc_info=True)

    def _conversation_row(self, conn, owner: str, conv_id: str):
        if not (schema.valid_owner(owner) and schema.valid_id(conv_id)):
            return None
        sql = "SELECT * FROM conversations WHERE id = ? AND owner_id = ?"
        return conn.execute(sql, (conv_id, owner)).fetchone()

    def _turn_owner_row(self, conn, owner: str, turn_id: str):
        if not (schema.valid_owner(owner) and schema.valid_id(turn_id)):
            return None
        sql = (
            "SELECT t.* FROM turns t JOIN conversations c ON c.id = t.conversation_id WHERE t.id = ? AND c.owner_id = ?"
        )
        return conn.execute(sql, (turn_id, owner)).fetchone()

    def _load_turns(self, conn, owner: str, conv_id: str, turn_id: str | None = None) -> list[Turn]:
        """Every turn row of the conversation (every version), or only ``turn_id``; in position order."""
        cond, args = "t.conversation_id = ?", [conv_id]
        if turn_id is not None:
            cond, args = cond + " AND t.id = ?", [*args, turn_id]
        outputs: dict[str, list[ImageRecord]] = {}
        sql = f"SELECT i.* FROM images i JOIN turns t ON t.id = i.turn_id WHERE {cond} AND i.role = 'output'"
        for row in conn.execute(sql + " AND i.owner_id = ? ORDER BY i.position", [*args, owner]):
            outputs.setdefault(row["turn_id"], []).append(schema.image_record(self._root, row))
        inputs: dict[str, list[ImageRecord]] = {}
        sql = (
            "SELECT ti.turn_id AS for_turn, i.* FROM turn_inputs ti JOIN turns t ON t.id = ti.turn_id "
            f"JOIN images i ON i.id = ti.image_id WHERE {cond} AND i.owner_id = ? ORDER BY ti.position"
        )
        for row in conn.execute(sql, [*args, owner]):
            inputs.setdefault(row["for_turn"], []).append(schema.image_record(self._root, row))
        rows = conn.execute(f"SELECT t.* FROM turns t WHERE {cond} ORDER BY t.position", args).fetchall()
        versions = self._version_ids(conn, conv_id)
        return [
            schema.turn_record(r, inputs.get(r["id"], ()), outputs.get(r["id"], ()), versions.get(r["id"], ()))
            for r in rows
        ]

    def _version_ids(self, conn, conv_id: str) -> dict[str, tuple[str, ...]]:
        """For each turn of the conversation, the ids of all versions of its turn, oldest first."""
        groups: dict[str, list[str]] = {}
        sql = "SELECT id, version_of FROM turns WHERE conversation_id = ? ORDER BY position"
        for r in conn.execute(sql, (conv_id,)):
            groups.setdefault(r["version_of"] or r["id"], []).append(r["id"])
        return {turn_id: tuple(ids) for ids in groups.values() for turn_id in ids}

    def _touch(self, conn, conv_id: str, now: float) -> None:
        conn.execute("UPDATE conversations SET updated_at = MAX(updated_at, ?) WHERE id = ?", (now, conv_id))

    # -- conversations --------------------------------------------------------------------------------------------

    def ensure_owner(self, owner: str) -> bool:
        if not schema.valid_owner(owner):
            return False
        with self._tx(write=False) as conn:  # every request asks: a read, so that a locked database still serves
            if conn.execute("SELECT 1 FROM owners WHERE id = ?", (owner,)).fetchone() is not None:
                return True
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO owners (id, created_at) VALUES (?, ?)", (owner, time.time()))
        return True

    def create_conversation(self, owner: str, title: str | None = None) -> str | None:
        if not schema.valid_owner(owner):
            return None
        conv_id, now = schema.new_id(), time.time()
        with self._tx() as conn:
            self.ensure_owner(owner)
            conn.execute(
                "INSERT INTO conversations (id, owner_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (conv_id, owner, schema.clean_text(title, schema.TITLE_MAX), now, now),
            )
        return conv_id

    def list_conversations(
        self, owner: str, query: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ConversationSummary]:
        """The owner's conversations, most recently updated first; ``query`` matches titles and prompts; ``offset``
        skips that many (the next page)."""
        if not schema.valid_owner(owner):
            return []
        limit = max(1, min(int(limit), 1000)) if isinstance(limit, int) and not isinstance(limit, bool) else 100
        offset = max(0, int(offset)) if isinstance(offset, int) and not isinstance(offset, bool) else 0
        sql = """SELECT c.id, c.title, c.updated_at,
            (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id AND t.version_of IS NULL) AS turn_count,
            (SELECT t.prompt FROM turns t WHERE t.conversation_id = c.id AND t.version_of IS NULL
                ORDER BY t.position LIMIT 1) AS first_prompt,
            (SELECT i.relpath FROM images i JOIN turns t ON t.id = i.turn_id
                WHERE i.conversation_id = c.id AND i.role = 'output' AND t.shown = 1
                ORDER BY COALESCE((SELECT r.position FROM turns r WHERE r.id = t.version_of), t.position) DESC,
                    i.position LIMIT 1) AS thumbnail
            FROM conversations c WHERE c.owner_id = ?"""
        args: list = [owner]
        query = schema.storable(query.strip()[: schema.QUERY_MAX]) if isinstance(query, str) else ""
        if query:
            sql += """ AND (casefold(c.title) LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM turns t
                WHERE t.conversation_id = c.id AND casefold(t.prompt) LIKE ? ESCAPE '\\'))"""
            args += [schema.like_pattern(query)] * 2
        sql += " ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ? OFFSET ?"
        with self._tx(write=False) as conn:
            rows = conn.execute(sql, [*args, limit, offset]).fetchall()
        return [
            ConversationSummary(
                id=r["id"],
                title=schema.display_title(r["title"], r["first_prompt"]),
                updated_at=r["updated_at"],
                turn_count=r["turn_count"],
                thumbnail=self._root / r["thumbnail"] if r["thumbnail"] else None,
            )
            for r in rows
        ]

    def get_conversation(self, owner: str, conv_id: str) -> Conversation | None:
        with self._tx(write=False) as conn:
            row = self._conversation_row(conn, owner, conv_id)
            if row is None:
                return None
            turns = schema.shown_turns(self._load_turns(conn, owner, conv_id))
        return Conversation(
            id=row["id"],
            owner_id=row["owner_id"],
            title=schema.display_title(row["title"], turns[0].prompt if turns else None),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            turns=turns,
            custom_title=row["title"],
        )

    def all_turns(self, owner: str, conv_id: str) -> list[Turn]:
        """Every turn of the conversation with every version, in the order they were made (for archives)."""
        with self._tx(write=False) as conn:
            if self._conversation_row(conn, owner, conv_id) is None:
                return []
            return self._load_turns(conn, owner, conv_id)

    def rename_conversation(self, owner: str, conv_id: str, title: str) -> bool:
        """Give a conversation a name (one line, at most 200 characters); False for an empty name or unknown id."""
        title = schema.clean_text(title, schema.TITLE_MAX)
        if title is None or not (schema.valid_owner(owner) and schema.valid_id(conv_id)):
            return False
        with self._tx() as conn:
            sql = "UPDATE conversations SET title = ? WHERE id = ? AND owner_id = ?"
            return conn.execute(sql, (title, conv_id, owner)).rowcount == 1

    def delete_conversation(self, owner: str, conv_id: str) -> bool:
        with self._tx() as conn:
            if self._conversation_row(conn, owner, conv_id) is None:
                return False
            sql = "SELECT relpath FROM images WHERE conversation_id = ? AND owner_id = ?"
            relpaths = [r[0] for r in conn.execute(sql, (conv_id, owner))]
            conn.execute("DELETE FROM conversations WHERE id = ? AND owner_id = ?", (conv_id, owner))
        self._unlink(relpaths)
        return True

    # -- images ---------------------------------------------------------------------------------------------------

    def add_input_image(self, owner: str, conv_id: str, image) -> ImageRecord | None:
        """Keep an image the user attached (as PNG, whatever it was); None for an unknown conversation."""
        image = schema.png_ready(image)
        with self._tx(write=False) as conn:
            if self._conversation_row(conn, owner, conv_id) is None:
                return None
        image_id = schema.new_id()
        relpath = schema.image_relpath(owner, image_id)
        with storage_faults():
            schema.save_plain_png(image, self._root / relpath)
        try:
            with self._tx() as conn:
                if self._conversation_row(conn, owner, conv_id) is None:  # deleted meanwhile
                    self._unlink([relpath])
                    return None
                sql = "SELECT COALESCE(MAX(position) + 1, 0) FROM images WHERE conversation_id = ? AND turn_id IS NULL"
                position = conn.execute(sql, (conv_id,)).fetchone()[0]
                shape = (image.width, image.height, image.mode)
                self._insert_image(conn, owner, conv_id, None, "input", position, image_id, shape, None)
                row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        except BaseException:
            self._unlink([relpath])
            raise
        return schema.image_record(self._root, row)

    def _insert_image(self, conn, owner, conv_id, turn_id, role, position, image_id, shape, seed) -> None:
        """One image row; ``shape`` is (width, height, mode)."""
        conn.execute(
            "INSERT INTO images (id, owner_id, conversation_id, turn_id, role, position, relpath, width, height, mode,"
            " seed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, owner, conv_id, turn_id, role, position, schema.image_relpath(owner, image_id), *shape)
            + (seed, time.time()),
        )

    def get_image(self, owner: str, image_id: str) -> ImageRecord | None:
        """The owner's image, only while its file exists."""
        if not (schema.valid_owner(owner) and schema.valid_id(image_id)):
            return None
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM images WHERE id = ? AND owner_id = ?", (image_id, owner)).fetchone()
        if row is None or not schema.valid_relpath(row["relpath"]):
            return None
        record = schema.image_record(self._root, row)
        return record if record.path.is_file() else None

    # -- turns ----------------------------------------------------------------------------------------------------

    def get_turn(self, owner: str, turn_id: str) -> Turn | None:
        with self._tx(write=False) as conn:
            row = self._turn_owner_row(conn, owner, turn_id)
            return None if row is None else self._load_turns(conn, owner, row["conversation_id"], turn_id)[0]

    def start_turn(
        self,
        owner: str,
        conv_id: str,
        kind: str,
        prompt: str,
        settings: dict,
        input_image_ids: Sequence[str],
        job_id: str | None = None,
        version_of: str | None = None,
    ) -> Turn | None:
        """Record a running turn at the next position; None for an unknown conversation.

        Every input image must be the owner's, else ValueError (the same one for a missing image). An image from
        another of the owner's conversations is copied into this one, so each conversation keeps its own files.
        ``version_of`` (a turn of this conversation, or one of its versions) makes the new turn another version of it,
        shown in its place.
        """
        if kind not in schema.KINDS:
            raise ValueError(f"kind must be one of {', '.join(schema.KINDS)}, not {kind!r}")
        if not (isinstance(prompt, str) and schema.encodable(prompt)):
            raise ValueError("prompt must be valid Unicode text")
        settings_json = schema.dumps_dict(settings, "settings")
        if job_id is not None and not (
            isinstance(job_id, str) and len(job_id) <= schema.JOB_ID_MAX and job_id.isprintable()
        ):
            raise ValueError(f"job_id must be text of at most {schema.JOB_ID_MAX} characters")
        if isinstance(input_image_ids, str) or not isinstance(input_image_ids, (list, tuple)):
            raise ValueError("input_image_ids must be a list of image ids")
        if len(input_image_ids) > schema.MAX_INPUTS:
            raise ValueError(f"at most {schema.MAX_INPUTS} input images")
        seed = settings["seed"] if schema.valid_seed(settings.get("seed")) else None
        turn_id, copied = schema.new_id(), []
        try:
            with self._tx() as conn:
                if self._conversation_row(conn, owner, conv_id) is None:
                    return None
                root = None
                if version_of is not None:
                    original = self._turn_owner_row(conn, owner, version_of)
                    if original is None or original["conversation_id"] != conv_id:
                        raise ValueError("version_of must be a turn of this conversation")
                    root = original["version_of"] or original["id"]
                    conn.execute("UPDATE turns SET shown = 0 WHERE id = ? OR version_of = ?", (root, root))
                inputs = self._resolve_inputs(conn, owner, conv_id, input_image_ids, copied)
                sql = "SELECT COALESCE(MAX(position) + 1, 0) FROM turns WHERE conversation_id = ?"
                position, now = conn.execute(sql, (conv_id,)).fetchone()[0], time.time()
                conn.execute(
                    "INSERT INTO turns (id, conversation_id, position, kind, prompt, settings_json, seed, status,"
                    " job_id, created_at, version_of) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (turn_id, conv_id, position, kind, prompt, settings_json, seed, job_id, now, root),
                )
                conn.executemany(
                    "INSERT INTO turn_inputs (turn_id, image_id, position) VALUES (?, ?, ?)",
                    [(turn_id, image_id, i) for i, image_id in enumerate(inputs)],
                )
                self._touch(conn, conv_id, now)
                return self._load_turns(conn, owner, conv_id, turn_id)[0]
        except BaseException:
            self._unlink(copied)
            raise

    def _resolve_inputs(self, conn, owner: str, conv_id: str, ids: Sequence[str], copied: list[str]) -> list[str]:
        """Ids of the input images within ``conv_id`` (copying the owner's images from other conversations)."""
        out, copies = [], {}
        for image_id in ids:
            row = None
            if schema.valid_id(image_id):
                sql = "SELECT * FROM images WHERE id = ? AND owner_id = ?"
                row = conn.execute(sql, (image_id, owner)).fetchone()
            if row is None:
                raise ValueError("Unknown input image: it does not exist or belongs to someone else.")
            if row["conversation_id"] != conv_id and image_id not in copies:
                copies[image_id] = self._copy_into(conn, owner, conv_id, row, copied)
            out.append(copies.get(image_id, image_id))
        return out

    def _copy_into(self, conn, owner: str, conv_id: str, row, copied: list[str]) -> str:
        image_id = schema.new_id()
        relpath = schema.image_relpath(owner, image_id)
        source = self._root / row["relpath"]
        if not (schema.valid_relpath(row["relpath"]) and source.is_file()):
            raise ValueError("Unknown input image: it does not exist or belongs to someone else.")
        atomic_copy(source, self._root / relpath)
        copied.append(relpath)
        sql = "SELECT COALESCE(MAX(position) + 1, 0) FROM images WHERE conversation_id = ? AND turn_id IS NULL"
        position = conn.execute(sql, (conv_id,)).fetchone()[0]
        shape = (row["width"], row["height"], row["mode"])
        self._insert_image(conn, owner, conv_id, None, "input", position, image_id, shape, row["seed"])
        return image_id

    def finish_turn(
        self,
        owner: str,
        turn_id: str,
        images: Sequence,
        seeds: Sequence[int],
        settings: dict,
        timings: dict | None = None,
    ) -> Turn | None:
        """Save the images (each PNG with its settings and seed) and mark the turn done.

        None when the turn is unknown or no longer running (cancelled, failed, undone): nothing is kept then.
        """
        images = [schema.png_ready(image) for image in images]
        seeds = list(seeds)
        if len(seeds) != len(images) or not all(schema.valid_seed(s) for s in seeds):
            raise ValueError("give one whole-number seed per image")
        settings_json = schema.dumps_dict(settings, "settings")
        timings_json = schema.dumps_dict(timings if timings is not None else {}, "timings")
        with self._tx(write=False) as conn:
            row = self._turn_owner_row(conn, owner, turn_id)
            if row is None or row["status"] != "running":
                return None
        conv_id, ids, written = row["conversation_id"], [], []
        try:
            for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):  # files first, outside the lock
                ids.append(schema.new_id())
                written.append(schema.image_relpath(owner, ids[-1]))
                with storage_faults():
                    save_png(image, self._root / written[-1], image_settings(settings, seed, i))
            with self._tx() as conn:
                row = self._turn_owner_row(conn, owner, turn_id)
                if row is None or row["status"] != "running":  # cancelled or undone while the files were written
                    self._unlink(written)
                    return None
                for i, (image_id, image, seed) in enumerate(zip(ids, images, seeds, strict=True)):
                    shape = (image.width, image.height, image.mode)
                    self._insert_image(conn, owner, conv_id, turn_id, "output", i, image_id, shape, seed)
                seed = seeds[0] if seeds else row["seed"]
                now = time.time()
                conn.execute(
                    "UPDATE turns SET status = 'done', error = NULL, settings_json = ?, seed = ?, finished_at = ?,"
                    " timings_json = ? WHERE id = ?",
                    (settings_json, seed, now, timings_json, turn_id),
                )
                self._touch(conn, conv_id, now)
                return self._load_turns(conn, owner, conv_id, turn_id)[0]
        except BaseException:
            self._unlink(written)
            raise

    def fail_turn(self, owner: str, turn_id: str, error: str, status: str = "failed") -> Turn | None:
        """Mark a running turn failed or cancelled; a turn already finished is returned unchanged."""
        if status not in ("failed", "cancelled"):
            raise ValueError("status must be 'failed' or 'cancelled'")
        error = schema.storable(str(error)[: schema.ERROR_MAX])
        with self._tx() as conn:
            row = self._turn_owner_row(conn, owner, turn_id)
            if row is None:
                return None
            if row["status"] == "running":
                now = time.time()
                sql = "UPDATE turns SET status = ?, error = ?, finished_at = ? WHERE id = ?"
                conn.execute(sql, (status, error, now, turn_id))
                self._touch(conn, row["conversation_id"], now)
            return self._load_turns(conn, owner, row["conversation_id"], turn_id)[0]

    def show_version(self, owner: str, turn_id: str) -> Turn | None:
        """Put this version of its turn on screen (it is what a follow-up edits when it is the latest); None for an
        unknown turn."""
        with self._tx() as conn:
            row = self._turn_owner_row(conn, owner, turn_id)
            if row is None:
                return None
            root = row["version_of"] or row["id"]
            conn.execute("UPDATE turns SET shown = (id = ?) WHERE id = ? OR version_of = ?", (turn_id, root, root))
            return self._load_turns(conn, owner, row["conversation_id"], turn_id)[0]

    def delete_last_turn(self, owner: str, conv_id: str) -> bool:
        """Undo: remove the last turn (with all its versions), its images, and the attached images no other turn
        uses."""
        with self._tx() as conn:
            if self._conversation_row(conn, owner, conv_id) is None:
                return False
            sql = "SELECT id FROM turns WHERE conversation_id = ? AND version_of IS NULL ORDER BY position DESC LIMIT 1"
            last = conn.execute(sql, (conv_id,)).fetchone()
            if last is None:
                return False
            root = last["id"]
            group = [r[0] for r in conn.execute("SELECT id FROM turns WHERE id = ? OR version_of = ?", (root, root))]
            marks = ",".join("?" * len(group))
            relpaths = [r[0] for r in conn.execute(f"SELECT relpath FROM images WHERE turn_id IN ({marks})", group)]
            sql = f"""SELECT i.id, i.relpath FROM images i WHERE i.conversation_id = ? AND i.turn_id IS NULL
                AND i.id IN (SELECT image_id FROM turn_inputs WHERE turn_id IN ({marks}))
                AND NOT EXISTS (SELECT 1 FROM turn_inputs o WHERE o.image_id = i.id AND o.turn_id NOT IN ({marks}))"""
            unused = conn.execute(sql, (conv_id, *group, *group)).fetchall()
            conn.execute("DELETE FROM turns WHERE id = ?", (root,))  # its versions follow (ON DELETE CASCADE)
            conn.executemany("DELETE FROM images WHERE id = ?", [(r["id"],) for r in unused])
            self._touch(conn, conv_id, time.time())
        self._unlink(relpaths + [r["relpath"] for r in unused])
        return True

    # -- startup --------------------------------------------------------------------------------------------------

    def recover_interrupted(self, error: str = INTERRUPTED) -> int:
        """At startup: mark every running turn (of any owner) failed, and delete temporary and orphaned files.

        Returns how many turns were marked. Orphans are PNGs no row points at (a crash between writing a file and
        committing its row), removed once older than an hour.
        """
        with self._tx() as conn:
            sql = "UPDATE turns SET status = 'failed', error = ?, finished_at = ? WHERE status = 'running'"
            count = conn.execute(sql, (schema.storable(str(error)[: schema.ERROR_MAX]), time.time())).rowcount
        for path in schema.image_files(self._root):
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
        self.remove_orphan_files()
        return count

    def remove_orphan_files(self, min_age_s: float = schema.ORPHAN_MIN_AGE_S) -> int:
        """Delete image files no row points at and last modified more than ``min_age_s`` ago; return the count."""
        with self._tx(write=False) as conn:
            known = {r[0] for r in conn.execute("SELECT relpath FROM images")}
        cutoff, removed = time.time() - min_age_s, 0
        for path in schema.image_files(self._root):
            relpath = f"{path.parent.name}/{path.name}"
            if schema.valid_relpath(relpath) and relpath not in known and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
