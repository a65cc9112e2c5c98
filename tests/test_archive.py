"""Conversation zips: a round trip keeps everything; a bad or hostile zip is refused and leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile

import pytest
from PIL import Image

from conversations import archive
from conversations.archive import export_conversation, import_conversation
from conversations.store import Store
from qwen_image.generation import ValidationError
from qwen_image.metadata import image_settings, read_settings

A, B = "anon-aaaaaaaaaaaaaaaaaaaaaaaa", "user-bob-0123456789abcdef01234567"
SETTINGS = {"model": "tiny", "mode": "generate", "steps": 4, "width": 16, "height": 12, "true_cfg": 4.0}


def tiny(seed: int, mode: str = "RGB") -> Image.Image:
    return Image.frombytes(mode, (16, 12), random.Random(seed).randbytes(16 * 12 * len(mode)))


def png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    tiny(seed).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "data") as s:
        yield s


@pytest.fixture
def conversation(store):
    """A's conversation: an upload, a generation of two images, an edit of one of them, a failed and a running turn."""
    conv = store.create_conversation(A)
    upload = store.add_input_image(A, conv, tiny(1, "RGBA"))
    first = store.start_turn(A, conv, "generate", "a red fox", {**SETTINGS, "seed": 10}, [])
    first = store.finish_turn(A, first.id, [tiny(2), tiny(3)], [10, 11], {**SETTINGS, "seed": 10}, {"total": 2.5})
    edit_settings = {**SETTINGS, "mode": "edit", "seed": 99, "negative_prompt": "blurry"}
    second = store.start_turn(A, conv, "edit", "make it blue", edit_settings, [first.outputs[1].id, upload.id])
    store.finish_turn(A, second.id, [tiny(4)], [99], edit_settings, {"total": 1.0})
    failed = store.start_turn(A, conv, "edit", "oops", {**SETTINGS, "seed": 5}, [first.outputs[0].id])
    store.fail_turn(A, failed.id, "out of memory")
    store.start_turn(A, conv, "generate", "still running", {**SETTINGS, "seed": 6}, [])
    return conv


def pixels(path) -> tuple:
    with Image.open(path) as im:
        return im.mode, im.size, im.tobytes()


def all_files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


def test_round_trip(store, conversation, tmp_path):
    zip_path = export_conversation(store, A, conversation, tmp_path / "out" / "conv.zip")
    assert zip_path == tmp_path / "out" / "conv.zip" and not list(zip_path.parent.glob(".tmp-*"))
    new = import_conversation(store, B, zip_path)
    old, copy = store.get_conversation(A, conversation), store.get_conversation(B, new)
    assert new != conversation and copy.owner_id == B and copy.title == old.title == "a red fox"
    assert len(copy.turns) == len(old.turns) == 4
    for a, b in zip(old.turns, copy.turns, strict=True):
        assert (b.kind, b.prompt, b.settings, b.seed) == (a.kind, a.prompt, a.settings, a.seed)
        assert b.id != a.id and len(b.inputs) == len(a.inputs) and len(b.outputs) == len(a.outputs)
        for x, y in zip(a.inputs + a.outputs, b.inputs + b.outputs, strict=True):
            assert y.id != x.id and y.path != x.path and pixels(y.path) == pixels(x.path)
            assert (y.role, y.seed, y.width, y.height, y.mode) == (x.role, x.seed, x.width, x.height, x.mode)
    done, edit, failed, running = copy.turns
    assert done.timings == {"total": 2.5} and edit.status == "done"
    assert edit.inputs[0] == done.outputs[1]  # still the first turn's image, not a copy
    assert (failed.status, failed.error) == ("failed", "out of memory")
    assert running.status == "failed" and "exported" in running.error
    for i, record in enumerate(done.outputs):
        with Image.open(record.path) as im:
            assert read_settings(im) == image_settings({**SETTINGS, "seed": 10}, 10 + i, i)
    assert store.get_conversation(A, conversation) == old  # the original is untouched


def test_versions_travel_with_the_archive(store, tmp_path):
    conv = store.create_conversation(A)
    first = store.start_turn(A, conv, "generate", "a red fox", {**SETTINGS, "seed": 1}, [])
    first = store.finish_turn(A, first.id, [tiny(1)], [1], {**SETTINGS, "seed": 1})
    again = store.start_turn(A, conv, "generate", "a red fox", {**SETTINGS, "seed": 2}, [], version_of=first.id)
    again = store.finish_turn(A, again.id, [tiny(2)], [2], {**SETTINGS, "seed": 2})
    edit = store.start_turn(A, conv, "edit", "blue", {**SETTINGS, "seed": 3}, [again.outputs[0].id])
    store.finish_turn(A, edit.id, [tiny(3)], [3], {**SETTINGS, "seed": 3})
    store.show_version(A, first.id)  # the first version is on screen
    copy = store.get_conversation(B, import_conversation(store, B, export_conversation(store, A, conv, tmp_path)))
    assert [(t.prompt, t.versions, t.version) for t in copy.turns] == [("a red fox", 2, 1), ("blue", 1, 1)]
    versions = [store.get_turn(B, i) for i in copy.turns[0].version_ids]
    assert [v.outputs[0].seed for v in versions] == [1, 2]
    assert copy.turns[1].inputs[0].id == versions[1].outputs[0].id  # the edit still uses version 2's image


def test_export_into_a_folder_and_renamed_title(store, conversation, tmp_path):
    store.rename_conversation(A, conversation, "My fox")
    path = export_conversation(store, A, conversation, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".zip"
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("conversation.json"))
        assert doc["format"] == archive.FORMAT and doc["version"] == 1 and doc["title"] == "My fox"
        assert len(zf.namelist()) == 5  # the JSON, the upload and three outputs (the failed turn reuses one)
    assert store.get_conversation(A, import_conversation(store, A, path)).title == "My fox"


def test_export_of_someone_elses_conversation_is_refused(store, conversation, tmp_path):
    with pytest.raises(ValidationError):
        export_conversation(store, B, conversation, tmp_path / "x.zip")
    assert not list(tmp_path.glob("*.zip"))


# -- hostile and broken archives ---------------------------------------------------------------------------------------


def rebuild(src, dst, drop=(), add=(), doc=None):
    """Copy the zip ``src`` to ``dst`` without the names in ``drop``, plus (name, bytes) pairs, optionally a new doc."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if info.filename == "conversation.json" and doc is not None:
                data = doc(json.loads(data))
                data = data if isinstance(data, bytes) else json.dumps(data).encode()
            zout.writestr(info.filename, data)
        for name, data in add:
            zout.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return dst


def declare_size(path, name: str, size: int) -> None:
    """Patch the uncompressed size the central directory declares for ``name``."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_len] == name.encode():
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(name)


@pytest.fixture
def exported(store, conversation, tmp_path):
    return export_conversation(store, A, conversation, tmp_path / "good.zip")


def first_output(path) -> str:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("conversation.json"))["turns"][0]["outputs"][0]


def set_turn(key, value, turn=0):
    def change(doc):
        doc["turns"][turn][key] = value
        return doc

    return change


def drop_key(key):
    def change(doc):
        del doc["turns"][0][key]
        return doc

    return change


def top(key, value):
    def change(doc):
        doc[key] = value
        return doc

    return change


BAD_NAMES = ["../evil.png", "images/../../evil.png", "/tmp/evil.png", "images\\evil.png", "C:/evil.png", "x.txt"]
BAD_DOCS = {
    "turns not a list": top("turns", "abc"),
    "format": top("format", "something else"),
    "newer version": top("version", 99),
    "version is text": top("version", "1"),
    "title not text": top("title", 5),
    "prompt not text": set_turn("prompt", 5),
    "prompt not Unicode": set_turn("prompt", "\ud800"),
    "settings not Unicode": set_turn("settings", {"x": "\udc80"}),
    "seed text": set_turn("seed", "1"),
    "seed bool": set_turn("seed", True),
    "settings a list": set_turn("settings", []),
    "unknown status": set_turn("status", "exploded"),
    "unknown kind": set_turn("kind", "paint"),
    "outputs not names": set_turn("outputs", [1]),
    "seeds mismatch": set_turn("seeds", [1]),
    "seed too big": set_turn("seeds", [2**70, 1]),
    "timings not object": set_turn("timings", 3),
    "missing prompt": drop_key("prompt"),
    "missing file": set_turn("outputs", ["images/nope.png", "images/nope2.png"]),
    "traversal in json": set_turn("inputs", ["../../etc/passwd"]),
    "uses a later image": lambda d: set_turn("inputs", d["turns"][1]["outputs"])(d),
    "outputs of a failed turn": set_turn("status", "failed"),
    "turn not an object": top("turns", [1, 2]),
    "version of itself": set_turn("version_of", 1),
    "version of a later turn": set_turn("version_of", 3),
    "version_of text": set_turn("version_of", "1", turn=1),
    "version of a version": lambda d: set_turn("version_of", 2, turn=2)(set_turn("version_of", 1, turn=1)(d)),
    "shown not a bool": set_turn("shown", "yes"),
    "not an object": lambda d: [d],
    "not JSON": lambda d: b"{not json",
    "not UTF-8": lambda d: b"\xff\xfe{}",
    "NaN": lambda d: json.dumps(d).replace('"steps": 4', '"steps": NaN', 1).encode(),
}


def assert_refused(store, path, match=None):
    before = all_files(store.image_root)
    with pytest.raises(ValidationError, match=match) as info:
        import_conversation(store, B, path)
    assert store.list_conversations(B) == []
    assert all_files(store.image_root) == before
    return str(info.value)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_or_unexpected_names_are_refused(store, exported, tmp_path, name):
    bad = rebuild(exported, tmp_path / "bad.zip", add=[(name, png_bytes())])
    with zipfile.ZipFile(bad) as zf:
        assert name in zf.namelist()  # the hostile name really is in the archive
    assert_refused(store, bad, "cannot be imported")


@pytest.mark.parametrize("case", sorted(BAD_DOCS))
def test_bad_documents_are_refused(store, exported, tmp_path, case):
    message = assert_refused(store, rebuild(exported, tmp_path / "bad.zip", doc=BAD_DOCS[case]))
    assert message.startswith("This conversation archive cannot be imported: ")


def test_missing_document(store, exported, tmp_path):
    assert_refused(store, rebuild(exported, tmp_path / "bad.zip", drop={"conversation.json"}), "conversation.json")


@pytest.mark.parametrize("content", [b"not a png at all", b"\xff\xd8\xff\xe0 jpeg-ish", "jpeg", "truncated"])
def test_images_that_are_not_sound_pngs(store, exported, tmp_path, content):
    name = first_output(exported)
    if content == "jpeg":
        buf = io.BytesIO()
        tiny(0).save(buf, format="JPEG")
        content = buf.getvalue()
    elif content == "truncated":
        content = png_bytes(7)[:-40]
    bad = rebuild(exported, tmp_path / "bad.zip", drop={name}, add=[(name, content)])
    assert_refused(store, bad, "not a valid PNG")


def test_declared_sizes_over_the_limits(store, exported, tmp_path):
    bad = rebuild(exported, tmp_path / "bad.zip")
    declare_size(bad, first_output(exported), 0xFFFFFFF0)
    assert_refused(store, bad, "too large")


def test_total_size_limit(store, exported, tmp_path, monkeypatch):
    zeros = [(f"images/pad{i}.png", bytes(300_000)) for i in range(4)]  # compresses to almost nothing
    bad = rebuild(exported, tmp_path / "bad.zip", add=zeros)
    assert bad.stat().st_size < 100_000
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1_000_000)
    assert_refused(store, bad, "exceed")


def test_lying_small_size_fails_its_checksum(store, exported, tmp_path):
    bad = rebuild(exported, tmp_path / "bad.zip")
    declare_size(bad, first_output(exported), 10)
    assert_refused(store, bad)


def test_too_many_entries_and_duplicates(store, exported, tmp_path, monkeypatch):
    name = first_output(exported)
    with pytest.warns(UserWarning, match="Duplicate"):
        dup = rebuild(exported, tmp_path / "dup.zip", add=[(name, png_bytes())])
    assert_refused(store, dup, "twice")
    monkeypatch.setattr(archive, "MAX_ENTRIES", 3)
    assert_refused(store, exported, "entries")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 broken", b"plain text, not a zip"])
def test_not_a_zip(store, tmp_path, content):
    path = tmp_path / "bad.zip"
    path.write_bytes(content)
    assert_refused(store, path, "not a readable zip")
    assert_refused(store, tmp_path / "missing.zip", "not a readable zip")


def test_store_failure_halfway_leaves_nothing(store, exported, monkeypatch):
    real, calls = store.finish_turn, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "finish_turn", flaky)
    before = all_files(store.image_root)
    with pytest.raises(OSError, match="disk full"):
        import_conversation(store, B, exported)
    assert store.list_conversations(B) == [] and all_files(store.image_root) == before


def test_invalid_owner_is_refused(store, exported):
    with pytest.raises(ValidationError):
        import_conversation(store, "../not an owner", exported)
