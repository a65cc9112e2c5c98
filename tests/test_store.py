"""The conversation store and owner tokens: persistence, isolation, recovery, undo, search, migration, threads."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conversations import store_schema
from conversations.owners import OwnerTokens, user_owner
from conversations.store import INTERRUPTED, Store
from qwen_image.metadata import image_settings, read_settings

A, B = "anon-aaaaaaaaaaaaaaaaaaaaaaaa", "anon-bbbbbbbbbbbbbbbbbbbbbbbb"
SETTINGS = {"model": "tiny", "mode": "generate", "prompt": "a red fox", "steps": 4, "width": 16, "height": 16}


def tiny(seed: int = 0, size=(16, 12), mode="RGB") -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode)))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "data") as s:
        yield s


def make_turn(store, owner, conv, prompt="a red fox", n=1, seed=7, inputs=(), kind="generate"):
    turn = store.start_turn(owner, conv, kind, prompt, {**SETTINGS, "prompt": prompt, "seed": seed}, list(inputs))
    images = [tiny(seed + i) for i in range(n)]
    return store.finish_turn(owner, turn.id, images, [seed + i for i in range(n)], {**SETTINGS, "seed": seed})


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


# -- persistence -----------------------------------------------------------------------------------------------------


def test_restart_finds_every_conversation_turn_and_image(tmp_path):
    with Store(tmp_path) as s:
        conv = s.create_conversation(A)
        upload = s.add_input_image(A, conv, tiny(1, mode="RGBA"))
        first = make_turn(s, A, conv, "a red fox", n=2, seed=10)
        second = make_turn(s, A, conv, "make it blue", seed=20, inputs=[first.outputs[1].id, upload.id], kind="edit")
        other = s.create_conversation(A, "Second")
        before = s.get_conversation(A, conv)
        listing = s.list_conversations(A)
    with Store(tmp_path) as s:
        assert s.get_conversation(A, conv) == before
        assert s.list_conversations(A) == listing
        assert [c.id for c in listing] == [other, conv]
        turns = s.get_conversation(A, conv).turns
        assert [t.prompt for t in turns] == ["a red fox", "make it blue"]
        assert [t.status for t in turns] == ["done", "done"]
        assert [r.id for r in turns[1].inputs] == [first.outputs[1].id, upload.id]
        assert s.get_turn(A, second.id) == turns[1]
        for record in (*turns[0].outputs, *turns[1].outputs, upload):
            assert s.get_image(A, record.id) == record
            assert record.path.is_file() and record.path.name == f"{record.id}.png"
            assert record.path.parent.parent == s.image_root
        assert s.get_image(A, upload.id).mode == "RGBA"
        with Image.open(turns[0].outputs[1].path) as im:
            assert im.tobytes() == tiny(11).tobytes()


def test_summary_title_thumbnail_and_order(store):
    conv = store.create_conversation(A)
    assert store.list_conversations(A)[0].title == store_schema.UNTITLED
    long_prompt = "a very long prompt about a lighthouse on a cliff at dawn with seagulls and crashing waves below"
    make_turn(store, A, conv, long_prompt, n=2)
    last = make_turn(store, A, conv, "now at night", seed=30)
    (summary,) = store.list_conversations(A)
    assert summary.turn_count == 2 and summary.thumbnail == last.outputs[0].path
    assert summary.title.endswith("…") and len(summary.title) <= 60 and long_prompt.startswith(summary.title[:-1])
    assert store.get_conversation(A, conv).latest_output() == last.outputs[0]
    assert store.rename_conversation(A, conv, "  Light\x00house\n\u202e  ")
    assert store.get_conversation(A, conv).title == "Light house"
    assert store.get_conversation(A, conv).custom_title == "Light house"
    assert store.rename_conversation(A, conv, "x" * 500) and len(store.list_conversations(A)[0].title) == 200
    assert not store.rename_conversation(A, conv, " \n\t ")
    assert not store.rename_conversation(A, conv, 42)
    newer = store.create_conversation(A)
    assert [c.id for c in store.list_conversations(A)] == [newer, conv]
    make_turn(store, A, conv, "bump")
    assert [c.id for c in store.list_conversations(A)] == [conv, newer]
    assert len(store.list_conversations(A, limit=1)) == 1


def test_metadata_round_trip(store):
    conv = store.create_conversation(A)
    settings_ = {**SETTINGS, "negative_prompt": "blurry", "true_cfg": 4.0, "seed": 100}
    turn = store.start_turn(A, conv, "generate", "a red fox", settings_, [])
    done = store.finish_turn(A, turn.id, [tiny(1), tiny(2)], [100, 101], settings_, {"total": 1.25})
    assert done.settings == settings_ and done.seed == 100 and done.timings == {"total": 1.25}
    assert done.finished_at >= done.created_at
    for i, record in enumerate(done.outputs):
        assert record.seed == 100 + i and (record.width, record.height, record.mode) == (16, 12, "RGB")
        with Image.open(record.path) as im:
            assert read_settings(im) == image_settings(settings_, 100 + i, i)


def test_upload_keeps_its_settings_and_odd_modes_become_png(store):
    conv = store.create_conversation(A)
    source = store.finish_turn(A, store.start_turn(A, conv, "generate", "p", SETTINGS, []).id, [tiny()], [5], SETTINGS)
    with Image.open(source.outputs[0].path) as im:
        im.load()
        again = store.add_input_image(A, conv, im)
    with Image.open(again.path) as im:
        assert read_settings(im) == image_settings(SETTINGS, 5, 0)
    cmyk = store.add_input_image(A, conv, Image.new("CMYK", (9, 9)))
    assert cmyk.mode == "RGB" and cmyk.position == 1
    with pytest.raises(TypeError):
        store.add_input_image(A, conv, b"not an image")


# -- owners ----------------------------------------------------------------------------------------------------------


def test_owners_are_isolated(store):
    conv = store.create_conversation(A)
    upload = store.add_input_image(A, conv, tiny())
    turn = make_turn(store, A, conv, "secret fox")
    running = store.start_turn(A, conv, "edit", "still going", SETTINGS, [])
    output = turn.outputs[0]
    store.create_conversation(B)
    assert store.get_conversation(B, conv) is None
    assert store.get_turn(B, turn.id) is None
    assert store.get_image(B, output.id) is None and store.get_image(B, upload.id) is None
    assert store.rename_conversation(B, conv, "mine now") is False
    assert store.delete_conversation(B, conv) is False
    assert store.delete_last_turn(B, conv) is False
    assert store.add_input_image(B, conv, tiny()) is None
    assert store.start_turn(B, conv, "generate", "x", SETTINGS, []) is None
    assert store.finish_turn(B, running.id, [tiny()], [1], SETTINGS) is None
    assert store.fail_turn(B, running.id, "no") is None
    assert store.list_conversations(B, query="fox") == []
    assert [c.id for c in store.list_conversations(B)] != [conv]
    own = store.list_conversations(B)[0].id
    with pytest.raises(ValueError) as foreign:
        store.start_turn(B, own, "edit", "steal", SETTINGS, [output.id])
    with pytest.raises(ValueError) as missing:
        store.start_turn(B, own, "edit", "steal", SETTINGS, ["0" * 32])
    assert str(foreign.value) == str(missing.value)
    assert store.get_conversation(B, own).turns == ()
    # A's data is untouched
    assert store.get_turn(A, running.id).status == "running"
    assert store.get_conversation(A, conv).title == "secret fox" and output.path.is_file()


@pytest.mark.parametrize("bad", [None, 5, "", "G" * 32, "a" * 31, "a" * 33, "../" + "a" * 29, "A" * 32, b"a" * 32])
def test_malformed_ids_behave_like_missing_ones(store, bad):
    conv = store.create_conversation(A)
    assert store.get_conversation(A, bad) is None and store.get_turn(A, bad) is None
    assert store.get_image(A, bad) is None
    assert store.rename_conversation(A, bad, "t") is False and store.delete_conversation(A, bad) is False
    assert store.delete_last_turn(A, bad) is False and store.fail_turn(A, bad, "e") is None
    assert store.finish_turn(A, bad, [], [], SETTINGS) is None
    assert store.start_turn(A, bad, "generate", "p", SETTINGS, []) is None
    with pytest.raises(ValueError):
        store.start_turn(A, conv, "generate", "p", SETTINGS, [bad])


@pytest.mark.parametrize("owner", [None, "", "../etc", "a b", "x" * 200, "ünïcode", 7, "-leading"])
def test_malformed_owners_get_nothing(store, owner):
    assert store.ensure_owner(owner) is False
    assert store.create_conversation(owner) is None
    assert store.list_conversations(owner) == []


def test_owner_tokens(tmp_path):
    tokens = OwnerTokens(tmp_path)
    token = tokens.new_token()
    owner = tokens.verify(token)
    assert owner and owner.startswith("anon-") and len(owner) == 29 and token.startswith(owner + ".")
    assert OwnerTokens(tmp_path).verify(token) == owner  # the secret persists
    key = tmp_path / "secret.key"
    assert len(key.read_bytes()) == 32 and key.stat().st_mode & 0o777 == 0o600
    assert tokens.new_token() != token
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_secret_is_shared_by_racing_starts_and_survives_odd_file_systems(tmp_path, monkeypatch):
    made = []
    barrier = threading.Barrier(6)

    def start():
        barrier.wait()
        made.append(OwnerTokens(tmp_path / "race"))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    token = made[0].new_token()
    assert len(made) == 6 and all(m.verify(token) for m in made)
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == ["secret.key"]

    def no_links(*args):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    tokens = OwnerTokens(tmp_path / "nolinks")
    assert tokens.verify(tokens.new_token()) and (tmp_path / "nolinks" / "secret.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "nolinks" / "secret.key").write_bytes(b"short")
    with pytest.raises(RuntimeError, match="damaged"):
        OwnerTokens(tmp_path / "nolinks")


def test_forged_tokens_verify_to_none(tmp_path):
    tokens = OwnerTokens(tmp_path / "one")
    token = tokens.new_token()
    owner, signature = token.split(".")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    someone = owner[:-1] + ("f" if owner[-1] != "f" else "e")  # another id (not this owner whatever its last digit)
    other = OwnerTokens(tmp_path / "two").new_token()
    forged = [
        f"{owner}.{flipped}",  # bad signature
        other,  # signed with another secret
        token[:-1],  # truncated
        owner,  # no signature
        f"{someone}.{signature}",  # someone else's id with this signature
        token.upper(),
        f" {token}",
        f"{token}\n",
        f"{token}.{signature}",
        token + "0" * 10_000_000,  # huge
        None,
        12345,
        token.encode(),
        [token],
        {"token": token},
        "",
    ]
    for bad in forged:
        assert tokens.verify(bad) is None, repr(bad)[:80]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=80), st.integers(), st.none()))
def test_random_tokens_verify_to_none(tmp_path_factory, value):
    tokens = OwnerTokens(tmp_path_factory.getbasetemp() / "hypothesis-tokens")
    assert tokens.verify(value) is None


@pytest.mark.parametrize("name", ["alice", "Alice", "../../etc/passwd", "a b", "ǅemal 😀", "\x00", "", "x" * 10_000])
def test_user_owner_is_deterministic_and_safe(store, name):
    owner = user_owner(name)
    assert owner == user_owner(name) and owner.startswith("user-")
    assert store.ensure_owner(owner) and store.create_conversation(owner)
    assert OwnerTokens(store.data_dir).user_owner(name) == owner
    assert user_owner("alice") != user_owner("Alice")


# -- turns: failure, recovery, undo, delete --------------------------------------------------------------------------


def test_interrupted_turn_is_recovered_after_a_crash(tmp_path):
    data = tmp_path / "data"
    crashed = Store(data)
    conv = crashed.create_conversation(A)
    done = make_turn(crashed, A, conv, "finished")
    running = crashed.start_turn(A, conv, "edit", "in flight", SETTINGS, [done.outputs[0].id], job_id="job-1")
    other = crashed.create_conversation(B)
    crashed.start_turn(B, other, "generate", "also in flight", SETTINGS, [])
    folder = done.outputs[0].path.parent
    (folder / ".tmp-abc123.png").write_bytes(b"half a png")
    (crashed.image_root / ".tmp-stray").write_bytes(b"")
    orphan = folder / f"{'e' * 32}.png"
    tiny().save(orphan)
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    fresh_orphan = folder / f"{'f' * 32}.png"
    tiny().save(fresh_orphan)
    # no close(): the process "dies" here
    with Store(data) as s:
        assert s.recover_interrupted() == 2
        turn = s.get_turn(A, running.id)
        assert (turn.status, turn.error, turn.job_id) == ("failed", INTERRUPTED, "job-1")
        assert turn.finished_at is not None
        assert s.get_turn(A, done.id) == done and done.outputs[0].path.is_file()
        assert s.get_conversation(B, other).turns[0].status == "failed"
        assert not list(s.image_root.rglob(".tmp-*"))
        assert not orphan.exists() and fresh_orphan.exists()
        assert s.recover_interrupted() == 0
        assert s.finish_turn(A, running.id, [tiny()], [1], SETTINGS) is None  # the job is gone for good
    crashed.close()


def test_fail_cancel_and_late_finish(store):
    conv = store.create_conversation(A)
    turn = store.start_turn(A, conv, "generate", "p", SETTINGS, [])
    cancelled = store.fail_turn(A, turn.id, "stopped by the user", status="cancelled")
    assert (cancelled.status, cancelled.error) == ("cancelled", "stopped by the user")
    assert store.fail_turn(A, turn.id, "later error") == cancelled  # already over: unchanged
    before = files_under(store.image_root)
    assert store.finish_turn(A, turn.id, [tiny()], [1], SETTINGS) is None
    assert files_under(store.image_root) == before
    with pytest.raises(ValueError):
        store.fail_turn(A, turn.id, "x", status="done")
    failed = store.fail_turn(A, store.start_turn(A, conv, "generate", "q", SETTINGS, []).id, "out of memory\ud800")
    assert failed.status == "failed" and failed.error.startswith("out of memory")


def test_bad_arguments_raise(store):
    conv = store.create_conversation(A)
    with pytest.raises(ValueError):
        store.start_turn(A, conv, "paint", "p", SETTINGS, [])
    with pytest.raises(ValueError):
        store.start_turn(A, conv, "generate", "p", {"path": object()}, [])
    with pytest.raises(ValueError):
        store.start_turn(A, conv, "generate", "bad \udc80 text", SETTINGS, [])
    with pytest.raises(ValueError):
        store.start_turn(A, conv, "generate", "p", SETTINGS, "0" * 32)
    turn = store.start_turn(A, conv, "generate", "p", SETTINGS, [])
    with pytest.raises(ValueError):
        store.finish_turn(A, turn.id, [tiny(), tiny()], [1], SETTINGS)
    with pytest.raises(ValueError):
        store.finish_turn(A, turn.id, [tiny()], [True], SETTINGS)
    with pytest.raises(ValueError):
        store.finish_turn(A, turn.id, [tiny()], [2**70], SETTINGS)
    assert store.start_turn(A, conv, "generate", "p", {"seed": 2**70}, []).seed is None
    assert store.get_turn(A, turn.id).status == "running"
    assert [t.position for t in store.get_conversation(A, conv).turns] == [0, 1]


def test_delete_conversation_removes_rows_and_files(store):
    conv = store.create_conversation(A)
    upload = store.add_input_image(A, conv, tiny())
    make_turn(store, A, conv, "one", n=2, inputs=[upload.id])
    keep = store.create_conversation(A)
    kept = make_turn(store, A, keep, "keep me")
    paths = [r.path for t in store.get_conversation(A, conv).turns for r in (*t.inputs, *t.outputs)]
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert store.delete_conversation(A, conv)
    assert not any(p.exists() for p in paths)
    assert store.get_conversation(A, conv) is None and store.get_image(A, upload.id) is None
    assert store.delete_conversation(A, conv) is False
    assert [c.id for c in store.list_conversations(A)] == [keep] and kept.outputs[0].path.is_file()
    assert files_under(store.image_root) == {os.path.relpath(kept.outputs[0].path, store.image_root)}


def test_undo_last_turn(store):
    conv = store.create_conversation(A)
    shared = store.add_input_image(A, conv, tiny(1))
    single = store.add_input_image(A, conv, tiny(2))
    first = make_turn(store, A, conv, "first", inputs=[shared.id])
    second = make_turn(store, A, conv, "second", n=2, inputs=[shared.id, single.id, first.outputs[0].id])
    assert store.delete_last_turn(A, conv)
    assert [t.id for t in store.get_conversation(A, conv).turns] == [first.id]
    assert not any(r.path.exists() for r in second.outputs)
    assert store.get_image(A, single.id) is None and not single.path.exists()  # only the undone turn used it
    assert store.get_image(A, shared.id) == shared and store.get_image(A, first.outputs[0].id) == first.outputs[0]
    assert store.get_conversation(A, conv).latest_output() == first.outputs[0]
    again = make_turn(store, A, conv, "again")
    assert again.position == 1
    assert store.delete_last_turn(A, conv) and store.delete_last_turn(A, conv)
    assert store.get_image(A, shared.id) is None  # its last user is gone
    assert store.delete_last_turn(A, conv) is False
    assert store.get_conversation(A, conv).turns == () and files_under(store.image_root) == set()
    assert store.get_conversation(A, conv).title == store_schema.UNTITLED


def test_input_from_another_conversation_is_copied(store):
    one, two = store.create_conversation(A), store.create_conversation(A)
    made = make_turn(store, A, one, "source")
    turn = store.start_turn(A, two, "edit", "use it", SETTINGS, [made.outputs[0].id, made.outputs[0].id])
    copy = turn.inputs[0]
    assert turn.inputs[1] == copy and copy.conversation_id == two and copy.role == "input"
    assert copy.id != made.outputs[0].id and copy.path.read_bytes() == made.outputs[0].path.read_bytes()
    assert store.delete_conversation(A, one)
    assert store.get_turn(A, turn.id).inputs == (copy, copy) and copy.path.is_file()


# -- search ------------------------------------------------------------------------------------------------------------


def test_search_takes_wildcards_literally(store):
    ids = {}
    for prompt in ["100% cotton shirt", "1000 cotton shirts", "snake_case sign", "snakeXcase sign", "back\\slash"]:
        ids[prompt] = store.create_conversation(A)
        make_turn(store, A, ids[prompt], prompt)

    def found(query):
        return {c.id for c in store.list_conversations(A, query=query)}

    assert found("100%") == {ids["100% cotton shirt"]}
    assert found("%") == {ids["100% cotton shirt"]}
    assert found("e_c") == {ids["snake_case sign"]}
    assert found("_") == {ids["snake_case sign"]}
    assert found("\\") == {ids["back\\slash"]}
    assert found("COTTON") == {ids["100% cotton shirt"], ids["1000 cotton shirts"]}
    assert found("  ") == set(ids.values()) and found(None) == set(ids.values())
    assert found("no such thing") == set()
    store.rename_conversation(A, ids["back\\slash"], "Größe Über")
    assert found("größe") == {ids["back\\slash"]} and found("ÜBER") == {ids["back\\slash"]}
    later = store.start_turn(A, ids["snakeXcase sign"], "edit", "add a Dragon", SETTINGS, [])
    assert later and found("dragon") == {ids["snakeXcase sign"]}
    assert found("\ud800") == set()  # a lone surrogate becomes "?"


def test_search_finds_any_substring_of_a_prompt(tmp_path):
    with Store(tmp_path) as store:

        @settings(max_examples=40, deadline=None)
        @given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40), st.data())
        def check(prompt, data):
            conv = store.create_conversation(A)
            store.start_turn(A, conv, "generate", prompt, SETTINGS, [])
            start = data.draw(st.integers(0, len(prompt) - 1))
            end = data.draw(st.integers(start + 1, len(prompt)))
            query = prompt[start:end]
            assert conv in {c.id for c in store.list_conversations(A, query=query, limit=1000)}

        check()


# -- schema ------------------------------------------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE owners (id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE conversations (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    title TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX conversations_owner ON conversations(owner_id, updated_at);
CREATE TABLE turns (id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, position INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('generate', 'edit')), prompt TEXT NOT NULL,
    settings_json TEXT NOT NULL DEFAULT '{}', seed INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')), job_id TEXT,
    created_at REAL NOT NULL, UNIQUE (conversation_id, position));
CREATE TABLE images (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    turn_id TEXT REFERENCES turns(id) ON DELETE CASCADE, role TEXT NOT NULL CHECK (role IN ('output', 'input')),
    position INTEGER NOT NULL DEFAULT 0, relpath TEXT NOT NULL UNIQUE, mode TEXT NOT NULL, seed INTEGER,
    created_at REAL NOT NULL);
CREATE INDEX images_conversation ON images(conversation_id);
CREATE INDEX images_turn ON images(turn_id);
CREATE TABLE turn_inputs (turn_id TEXT NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, position INTEGER NOT NULL,
    PRIMARY KEY (turn_id, position));
CREATE INDEX turn_inputs_image ON turn_inputs(image_id);
PRAGMA user_version = 1;
"""


def make_v1_database(data) -> dict:
    """A database as the first version of the program left it, with one conversation of two turns."""
    ids = {k: f"{n:032x}" for n, k in enumerate(["conv", "t1", "t2", "out", "upload"], 1)}
    folder = store_schema.owner_folder(A)
    (data / "images" / folder).mkdir(parents=True)
    tiny(3, size=(20, 12)).save(data / "images" / folder / f"{ids['out']}.png")
    conn = sqlite3.connect(data / "history.sqlite3")
    conn.executescript(V1_SCHEMA)
    with conn:
        conn.execute("INSERT INTO owners VALUES (?, 1.0)", (A,))
        conn.execute("INSERT INTO conversations VALUES (?, ?, NULL, 1.0, 3.0)", (ids["conv"], A))
        turn = "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
        conn.execute(turn, (ids["t1"], ids["conv"], 0, "generate", "old fox", '{"steps": 8}', 42, "done", 2.0))
        conn.execute(turn, (ids["t2"], ids["conv"], 1, "edit", "old edit", "{}", None, "failed", 3.0))
        image = "INSERT INTO images VALUES (?, ?, ?, ?, ?, 0, ?, 'RGB', ?, 2.0)"
        conn.execute(image, (ids["out"], A, ids["conv"], ids["t1"], "output", f"{folder}/{ids['out']}.png", 42))
        conn.execute(image, (ids["upload"], A, ids["conv"], None, "input", f"{folder}/{ids['upload']}.png", None))
        conn.execute("INSERT INTO turn_inputs VALUES (?, ?, 0)", (ids["t2"], ids["out"]))
        conn.execute("INSERT INTO turn_inputs VALUES (?, ?, 1)", (ids["t2"], ids["upload"]))
    conn.close()
    return ids


def test_migration_from_v1(tmp_path):
    ids = make_v1_database(tmp_path)
    with Store(tmp_path) as s:
        conn = sqlite3.connect(tmp_path / "history.sqlite3")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3 == store_schema.SCHEMA_VERSION
        conn.close()
        conv = s.get_conversation(A, ids["conv"])
        assert conv.title == "old fox" and (conv.created_at, conv.updated_at) == (1.0, 3.0)
        first, second = conv.turns
        assert (first.prompt, first.settings, first.seed, first.status) == ("old fox", {"steps": 8}, 42, "done")
        assert (first.error, first.finished_at, first.timings) == (None, None, {})
        assert (second.status, second.error, [r.id for r in second.inputs]) == (
            "failed",
            None,
            [ids["out"], ids["upload"]],
        )
        out = first.outputs[0]
        assert (out.width, out.height, out.seed) == (20, 12, 42)  # read from the file by the migration
        assert (second.inputs[1].width, second.inputs[1].height) == (0, 0)  # its file is gone
        assert s.get_image(A, ids["upload"]) is None
        made = make_turn(s, A, ids["conv"], "new turn")
        assert made.position == 2 and made.timings == {}
    with Store(tmp_path) as s:  # opening again migrates nothing
        assert len(s.get_conversation(A, ids["conv"]).turns) == 3


def test_migration_from_v2_adds_versions(tmp_path):
    ids = make_v1_database(tmp_path)
    conn = sqlite3.connect(tmp_path / "history.sqlite3")
    conn.isolation_level = None
    conn.execute("BEGIN")
    store_schema.MIGRATIONS[1](conn, tmp_path / "images")  # the database as version 2 of the program left it
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    conn.close()
    with Store(tmp_path) as s:
        conn = sqlite3.connect(tmp_path / "history.sqlite3")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        conn.close()
        conv = s.get_conversation(A, ids["conv"])
        first, second = conv.turns
        assert (first.version_of, first.shown, first.version, first.versions) == (None, 1, 1, 1)
        assert s.list_conversations(A)[0].turn_count == 2
        # an old turn gets a new version in its place
        again = s.start_turn(A, ids["conv"], "generate", "old fox", {"seed": 5}, [], version_of=ids["t1"])
        s.finish_turn(A, again.id, [tiny(5)], [5], {"seed": 5})
        conv = s.get_conversation(A, ids["conv"])
        assert [t.id for t in conv.turns] == [again.id, ids["t2"]] and conv.turns[0].version == 2
        assert s.list_conversations(A)[0].turn_count == 2


def test_versions_share_a_place_and_the_shown_one_counts(store):
    conv = store.create_conversation(A)
    first = make_turn(store, A, conv, "a fox", seed=1)
    second = make_turn(store, A, conv, "blue", seed=2, inputs=[first.outputs[0].id], kind="edit")
    v2 = store.start_turn(A, conv, "edit", "blue", {"seed": 3}, [first.outputs[0].id], version_of=second.id)
    v2 = store.finish_turn(A, v2.id, [tiny(3)], [3], {"seed": 3})
    v3 = store.start_turn(A, conv, "edit", "blue", {"seed": 4}, [first.outputs[0].id], version_of=v2.id)
    assert v3.version_of == second.id and v3.version_ids == (second.id, v2.id, v3.id) and v3.version == 3
    shown = store.get_conversation(A, conv).turns
    assert [t.id for t in shown] == [first.id, v3.id] and shown[1].status == "running"
    assert store.get_conversation(A, conv).latest_output().id == first.outputs[0].id  # v3 has no image yet
    assert store.show_version(A, v2.id).shown == 1
    conv_now = store.get_conversation(A, conv)
    assert conv_now.turns[1].id == v2.id and conv_now.latest_output().id == v2.outputs[0].id
    assert store.list_conversations(A)[0].thumbnail == v2.outputs[0].path
    assert store.show_version(B, v2.id) is None  # someone else's turn
    with pytest.raises(ValueError, match="version_of"):
        store.start_turn(A, store.create_conversation(A), "edit", "x", {}, [], version_of=second.id)
    files = [o.path for o in second.outputs + v2.outputs]
    assert store.delete_last_turn(A, conv)  # the turn goes with all its versions
    assert [t.id for t in store.get_conversation(A, conv).turns] == [first.id]
    assert not any(p.exists() for p in files) and store.get_turn(A, v3.id) is None


def test_conversation_pages(store):
    made = [store.create_conversation(A, f"chat {n}") for n in range(5)]
    page1 = store.list_conversations(A, limit=2)
    page2 = store.list_conversations(A, limit=2, offset=2)
    page3 = store.list_conversations(A, limit=2, offset=4)
    seen = [c.id for c in page1 + page2 + page3]
    assert sorted(seen) == sorted(made) and len(set(seen)) == 5 and len(page3) == 1
    assert store.list_conversations(A, offset=-3) == store.list_conversations(A)


def test_failed_migration_changes_nothing(tmp_path, monkeypatch):
    ids = make_v1_database(tmp_path)

    def broken(conn, root):
        conn.execute("ALTER TABLE turns ADD COLUMN error TEXT")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store_schema, "MIGRATIONS", (store_schema.MIGRATIONS[0], broken))
    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", 2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Store(tmp_path)
    conn = sqlite3.connect(tmp_path / "history.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "error" not in [r[1] for r in conn.execute("PRAGMA table_info(turns)")]
    conn.close()
    monkeypatch.undo()
    with Store(tmp_path) as s:
        assert s.get_conversation(A, ids["conv"]) is not None


def test_newer_database_is_refused(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "history.sqlite3")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(tmp_path)


def test_fresh_database_settings(store):
    conn = sqlite3.connect(store.data_dir / "history.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.image_root == store.data_dir / "images" and store.image_root.is_dir()


# -- threads -----------------------------------------------------------------------------------------------------------


def test_many_threads_at_once(store):
    errors, done = [], {}
    barrier = threading.Barrier(8)

    def work(n):
        try:
            barrier.wait()
            owner = A if n % 2 else B
            conv = store.create_conversation(owner)
            for k in range(5):
                turn = store.start_turn(owner, conv, "generate", f"thread {n} turn {k}", SETTINGS, [])
                store.finish_turn(owner, turn.id, [tiny(n * 10 + k)], [k], SETTINGS)
                store.list_conversations(owner, query="thread")
            done[n] = (owner, conv)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(done) == 8
    for n, (owner, conv) in done.items():
        turns = store.get_conversation(owner, conv).turns
        assert [t.prompt for t in turns] == [f"thread {n} turn {k}" for k in range(5)]
        assert all(t.status == "done" and t.outputs[0].path.is_file() for t in turns)
    assert len(store.list_conversations(A)) == len(store.list_conversations(B)) == 4


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    from qwen_image.atomic import atomic_write

    target = tmp_path / "deep" / "file.png"
    with atomic_write(target, ".png") as f:
        f.write(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_write(target, ".png") as f:
        f.write(b"half of the sec")
        raise RuntimeError("the writer died")
    assert target.read_bytes() == b"first"  # the old file stands; no temporary file is left behind
    assert [p.name for p in target.parent.iterdir()] == ["file.png"]
