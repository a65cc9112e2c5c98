"""Faults injected into the tiny pipeline (out of memory, NaN output, crashes) and into storage (a full disk, a
read-only data folder, a locked database): a clear message, and the server keeps serving."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from conversations.faults import StorageError
from conversations.jobs import JobManager
from conversations.store import Store
from conversations.turns import TurnImage, TurnService
from qwen_image.engine import EngineError
from qwen_image.generation import GenerationRequest


def fail_times(monkeypatch, obj, name, times, exc_factory, counter):
    """Make obj.name raise exc_factory() the first ``times`` calls, then behave normally."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        counter["calls"] = counter.get("calls", 0) + 1
        if counter["calls"] <= times:
            raise exc_factory()
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)


def oom():
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")


def test_oom_in_denoising_is_retried_with_lower_memory_settings(engine21, monkeypatch):
    pipe = engine21._loaded.generate
    count = {}
    fail_times(monkeypatch, pipe.transformer, "forward", 1, oom, count)
    result = engine21.generate(GenerationRequest(prompt="an injected fault", seed=3))
    assert len(result.images) == 1
    assert any("Ran out of GPU memory; retried with" in n and "KV cache off" in n for n in result.notes)
    monkeypatch.undo()
    assert engine21.generate(GenerationRequest(prompt="the next one", seed=4)).notes == ()


def test_oom_in_decoding_retries_the_decode_tiled(engine21, monkeypatch):
    vae = engine21._loaded.generate.vae
    count = {}
    fail_times(monkeypatch, vae, "decode", 1, oom, count)
    result = engine21.generate(GenerationRequest(prompt="decode fault", seed=5))
    assert any("decoded again with VAE tiling" in n for n in result.notes)
    assert vae.use_tiling
    monkeypatch.undo()


def test_persistent_oom_gives_a_clear_error_and_the_engine_keeps_serving(engine21, monkeypatch):
    pipe = engine21._loaded.generate
    fail_times(monkeypatch, pipe.transformer, "forward", 10**6, oom, {})
    with pytest.raises(EngineError, match="Out of GPU memory even with"):
        engine21.generate(GenerationRequest(prompt="never fits"))
    monkeypatch.undo()
    assert engine21.generate(GenerationRequest(prompt="fits again")).images


def test_nan_output_is_decoded_again_in_float32(engine21, monkeypatch):
    vae = engine21._loaded.generate.vae
    original = vae.decode
    calls = {"n": 0}

    def nan_once(z, *args, **kwargs):
        calls["n"] += 1
        out = original(z, *args, **kwargs)
        if calls["n"] == 1:
            return (torch.full_like(out[0], float("nan")),)
        return out

    monkeypatch.setattr(vae, "decode", nan_once)
    result = engine21.generate(GenerationRequest(prompt="nan fault", seed=6))
    assert any("decoded again in float32" in n for n in result.notes)
    assert calls["n"] == 2
    assert vae.dtype == torch.float32  # restored to the profile's dtype (float32 on the CPU)


def test_a_crash_marks_the_turn_failed_and_the_queue_moves_on(engine21, monkeypatch, tmp_path):
    store = Store(tmp_path)
    jobs = JobManager(engine21, store)
    try:
        owner = "anon-" + "a" * 24
        store.ensure_owner(owner)
        conv = store.create_conversation(owner)
        pipe = engine21._loaded.generate
        fail_times(monkeypatch, pipe.transformer, "forward", 1, lambda: RuntimeError("injected driver fault"), {})
        first = jobs.submit(owner, conv, engine21.resolve(GenerationRequest(prompt="crashes")), [])
        second = jobs.submit(owner, conv, engine21.resolve(GenerationRequest(prompt="works")), [])
        ends = [list(jobs.follow(owner, s.id, timeout=120))[-1] for s in (first, second)]
        assert [e.state for e in ends] == ["failed", "done"]
        assert "injected driver fault" in ends[0].error
        turns = store.get_conversation(owner, conv).turns
        assert [(t.status, len(t.outputs)) for t in turns] == [("failed", 0), ("done", 1)]
        assert "injected driver fault" in turns[0].error
    finally:
        jobs.shutdown()
        store.close()


# -- storage faults: a full disk, a read-only data folder, a database locked by another program -----------------------
# Each: a clear message, the turn marked failed (not left running), nothing half-written (no partial PNG, no row
# without its file, no file without its row), and the next request works once the fault clears.

OWNER = "anon-" + "f" * 24
FULL = "disk that holds the data folder is full"
READ_ONLY = "data folder is read-only"
LOCKED = "locked by another program"


class Gated:
    """The tiny engine, holding each result until released, so that a fault can begin while a job runs."""

    def __init__(self, engine):
        self.engine, self.generated, self.release = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, on_progress=None, cancel=None):
        result = self.engine.generate(request, on_progress=on_progress, cancel=cancel)
        self.generated.set()
        self.release.wait(60)
        return result


@contextmanager
def services(engine, data_dir, busy_timeout_s=0.3):
    store = Store(data_dir, busy_timeout_s=busy_timeout_s)
    jobs = JobManager(engine, store)
    try:
        yield store, jobs, TurnService(engine, store, jobs)
    finally:
        jobs.shutdown()
        store.close()


def generate(turns, conv=None, prompt="a lighthouse"):
    return turns.start(OWNER, conv, GenerationRequest(prompt=prompt, seed=1, steps=2, width=64, height=64))


def end_of(jobs, snap):
    return list(jobs.follow(OWNER, snap.id, timeout=120))[-1]


def half_written(store) -> dict:
    """Image files no row points at (temporary ones included), and rows whose file is missing."""
    files = set()
    for folder, _, names in os.walk(store.image_root):
        files |= {os.path.relpath(os.path.join(folder, n), store.image_root) for n in names}
    rows = {r[0] for r in store._conn.execute("SELECT relpath FROM images")}
    return {"files without rows": files - rows, "rows without files": rows - files}


def turn_states(store, conv):
    return [(t.status, len(t.outputs)) for t in store.get_conversation(OWNER, conv).turns]


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_full_disk_while_saving_fails_the_turn_and_leaves_nothing(engine21, tmp_path, monkeypatch):
    """ENOSPC at the OS boundary: the image's bytes are written, then flushing them to the disk fails (os.fsync),
    as on a full disk; the temporary file must go."""
    with services(engine21, tmp_path) as (store, jobs, turns):
        first = end_of(jobs, generate(turns))
        conv = first.conversation_id

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        failed = end_of(jobs, generate(turns, conv, "make it blue"))
        assert failed.state == "failed" and FULL in failed.error and failed.error.startswith("The image could not")
        assert turn_states(store, conv) == [("done", 1), ("failed", 0)]
        assert FULL in store.get_conversation(OWNER, conv).turns[-1].error
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}
        with pytest.raises(StorageError, match=FULL):  # an upload cannot be kept either: said before anything runs
            turns.start(OWNER, conv, GenerationRequest(prompt="edit it"), [TurnImage(Image.new("RGB", (64, 64)))])
        assert len(store.get_conversation(OWNER, conv).turns) == 2

        monkeypatch.undo()  # space again
        assert end_of(jobs, generate(turns, conv, "once more")).state == "done"
        assert turn_states(store, conv) == [("done", 1), ("failed", 0), ("done", 1)]


def test_a_read_only_data_folder_fails_the_turn_and_the_next_works_once_writable(engine21, tmp_path, monkeypatch):
    """Read-only at the OS boundary (the tests run as root, for whom chmod stops no write): creating a file under the
    data folder fails with EROFS (os.open, which tempfile uses), and the database refuses writes (SQLite's
    query_only, the same SQLITE_READONLY a read-only database file gives). The fault begins while a job runs."""
    gated = Gated(engine21)
    with services(gated, tmp_path) as (store, jobs, turns):
        gated.release.set()
        conv = end_of(jobs, generate(turns)).conversation_id
        gated.release.clear()
        gated.generated.clear()
        running = generate(turns, conv, "make it red")
        assert gated.generated.wait(60)

        real_open, root = os.open, str(tmp_path)

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        with store._lock:
            store._conn.execute("PRAGMA query_only = ON")
        gated.release.set()
        failed = end_of(jobs, running)
        assert failed.state == "failed" and READ_ONLY in failed.error
        with pytest.raises(StorageError, match=READ_ONLY):
            generate(turns, conv, "a new request meanwhile")
        assert store.ensure_owner(OWNER) and store.get_conversation(OWNER, conv) is not None  # reading still works
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}

        monkeypatch.undo()  # writable again: the failed turn gets its end recorded, and the next request works
        with store._lock:
            store._conn.execute("PRAGMA query_only = OFF")
        wait_for(lambda: turn_states(store, conv)[-1] == ("failed", 0))
        assert READ_ONLY in store.get_conversation(OWNER, conv).turns[-1].error
        assert end_of(jobs, generate(turns, conv, "again")).state == "done"
        assert turn_states(store, conv) == [("done", 1), ("failed", 0), ("done", 1)]
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}


HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")  # what a backup that copies the database file does first
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""

SLOW_BACKUP = """
import sqlite3, sys, time
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
print("started", flush=True)
src.backup(dst, pages=1, progress=lambda status, remaining, total: time.sleep(0.1))  # sqlite3's .backup, slowly
"""


def test_a_database_backup_or_lock_held_by_another_process(engine21, tmp_path):
    with services(engine21, tmp_path / "data") as (store, jobs, turns):
        conv = end_of(jobs, generate(turns)).conversation_id
        db = str(store.data_dir / "history.sqlite3")

        # an online backup in another process (sqlite3's .backup) takes no lock that stops a save (WAL mode)
        backup = subprocess.Popen(
            [sys.executable, "-c", SLOW_BACKUP, db, str(tmp_path / "backup.sqlite3")], stdout=subprocess.PIPE, text=True
        )
        assert backup.stdout.readline().strip() == "started"
        assert end_of(jobs, generate(turns, conv, "during the backup")).state == "done"
        assert backup.poll() is None, "the backup ended before the save: nothing was shown"
        assert backup.wait(120) == 0

        # a process holding the database's write lock (a backup copying the file) for longer than the busy timeout
        gated = Gated(engine21)
        jobs.backend = gated
        running = generate(turns, conv, "saved while locked")
        assert gated.generated.wait(60)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(StorageError, match=LOCKED):  # a new request: said after the busy timeout
                generate(turns, conv, "sent while locked")
            assert store.get_conversation(OWNER, conv) is not None  # the page still reads
            gated.release.set()
            failed = end_of(jobs, running)  # its save waited SAVE_ATTEMPTS busy timeouts, then gave up
            assert failed.state == "failed" and LOCKED in failed.error
        finally:
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(30)
        wait_for(lambda: turn_states(store, conv)[-1] == ("failed", 0))  # recorded once the lock is gone
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}
        jobs.backend = engine21
        assert end_of(jobs, generate(turns, conv, "after the backup")).state == "done"
        assert [s for s, _ in turn_states(store, conv)] == ["done", "done", "failed", "done"]


@contextmanager
def tiny_disk(path, size="3m"):
    """A real file system of ``size`` (tmpfs) at ``path``; skips where mounting is not allowed (not root)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_really_full_disk(engine21, tmp_path):
    """The same on a real file system (a 3 MiB tmpfs) that fills up while a job runs: the PNG write and SQLite's own
    writes fail."""
    gated = Gated(engine21)
    with tiny_disk(tmp_path / "disk") as disk, services(gated, disk / "data") as (store, jobs, turns):
        gated.release.set()
        conv = end_of(jobs, generate(turns)).conversation_id
        gated.release.clear()
        running = generate(turns, conv, "no room")
        fill(disk / "filler")
        gated.release.set()
        failed = end_of(jobs, running)
        assert failed.state == "failed" and FULL in failed.error
        with pytest.raises(StorageError, match=FULL):
            generate(turns, conv, "no room either")
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}
        (disk / "filler").unlink()
        wait_for(lambda: turn_states(store, conv)[-1] == ("failed", 0))
        assert end_of(jobs, generate(turns, conv, "room again")).state == "done"
        assert turn_states(store, conv) == [("done", 1), ("failed", 0), ("done", 1)]
        assert half_written(store) == {"files without rows": set(), "rows without files": set()}


def test_the_openai_endpoint_answers_a_storage_fault_with_503():
    from serving.openai_api import refusal

    error = refusal(StorageError("locked"))
    assert (error.status, error.code, error.type) == (503, "storage_unavailable", "server_error")
    assert LOCKED in error.message
