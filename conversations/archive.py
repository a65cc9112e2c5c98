"""A conversation as a zip file: ``conversation.json`` plus its PNGs under ``images/``.

``export_conversation`` writes one (atomically). ``import_conversation`` reads one back as a new conversation with
new ids, after checking everything in it: entry count and sizes, file names (no paths outside the archive), the JSON
document's types, the references between turns and images, and every PNG (opened and decoded). A bad archive raises
``ValidationError`` naming the problem; nothing of it is kept, even when the store fails halfway.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from qwen_image.atomic import atomic_write
from qwen_image.generation import MAX_TEXT_CHARS, ValidationError
from qwen_image.images import MAX_FILE_BYTES, MAX_PIXELS

from .store_schema import ERROR_MAX, KINDS, MAX_INPUTS, STATUSES, TITLE_MAX, Conversation, valid_seed

FORMAT = "qwen-image-chat/conversation"
VERSION = 1
JSON_NAME = "conversation.json"
IMAGE_DIR = "images/"
MAX_TOTAL_BYTES = 500 * 1024**2
MAX_ENTRIES = 2000
MAX_JSON_BYTES = 16 * 1024**2
MAX_IMAGE_BYTES = MAX_FILE_BYTES
MAX_TURNS = 1000
MAX_OUTPUTS = 16
_IMAGE_NAME = re.compile(r"images/[A-Za-z0-9_-]{1,64}\.png")
_ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_EXPORT_INTERRUPTED = "interrupted: the job was still running when the conversation was exported"


@dataclass(frozen=True)
class TurnPlan:
    kind: str
    prompt: str
    settings: dict
    seed: int | None
    status: str
    error: str | None
    timings: dict
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    seeds: tuple[int, ...]
    version_of: int | None = None  # the (1-based) number of the earlier turn this one is another version of
    shown: bool = True  # the version on screen in its place


@dataclass(frozen=True)
class ArchivePlan:
    title: str | None
    turns: tuple[TurnPlan, ...]


# -- export -------------------------------------------------------------------------------------------------------


def _entry_name(record) -> str:
    return f"{IMAGE_DIR}{record.id}.png"


def conversation_document(conv: Conversation, every=None) -> tuple[dict, dict[str, Path]]:
    """The JSON document of ``conv`` and the files to store beside it (zip name -> path); missing files are left out.

    ``every``: all of its turns with every version (``Store.all_turns``), in order; a version names the number of its
    original (``version_of``) and ``shown`` marks the one on screen. Without it, the turns shown."""
    files: dict[str, Path] = {}
    turns = []
    rows = list(every) if every is not None else list(conv.turns)
    number = {t.id: n for n, t in enumerate(rows, 1)}
    for turn in rows:
        inputs = [r for r in turn.inputs if r.path.is_file()]
        outputs = [r for r in turn.outputs if r.path.is_file()]
        files.update((_entry_name(r), r.path) for r in inputs + outputs)
        turns.append(
            {
                "kind": turn.kind,
                "prompt": turn.prompt,
                "settings": turn.settings,
                "seed": turn.seed,
                "status": turn.status,
                "error": turn.error,
                "timings": turn.timings,
                "created_at": turn.created_at,
                "finished_at": turn.finished_at,
                "inputs": [_entry_name(r) for r in inputs],
                "outputs": [_entry_name(r) for r in outputs],
                "seeds": [r.seed if r.seed is not None else (turn.seed or 0) for r in outputs],
                "version_of": number.get(turn.version_of) if getattr(turn, "version_of", None) else None,
                "shown": bool(getattr(turn, "shown", 1)),
            }
        )
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "title": conv.custom_title,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
        "turns": turns,
    }
    return doc, files


def export_conversation(store, owner: str, conv_id: str, dest: Path) -> Path:
    """Write the conversation to the zip ``dest`` (or into the folder ``dest``) atomically; return its path."""
    conv = store.get_conversation(owner, conv_id)
    if conv is None:
        raise ValidationError("That conversation does not exist.")
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"conversation-{conv.id[:8]}.zip"
    doc, files = conversation_document(conv, store.all_turns(owner, conv_id))
    with atomic_write(dest, ".zip") as f, zipfile.ZipFile(f, "w") as zf:
        text = json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True)
        zf.writestr(JSON_NAME, text, compress_type=zipfile.ZIP_DEFLATED)
        for name, path in files.items():
            zf.write(path, name, compress_type=zipfile.ZIP_STORED)  # PNGs are compressed already
    return dest


# -- checks -------------------------------------------------------------------------------------------------------


def _problem(message: str) -> ValidationError:
    return ValidationError(f"This conversation archive cannot be imported: {message}.", "archive")


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise _problem(message)


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")


def check_name(name: str) -> None:
    """Reject names that could point outside the archive, then anything but the files an export contains."""
    parts = name.split("/")
    unsafe = "\\" in name or name.startswith("/") or ":" in name or ".." in parts or any(ord(c) < 32 for c in name)
    _expect(not unsafe, f"the file name {_shown(name)} is unsafe (absolute, drive or parent-folder path)")
    _expect(name in (JSON_NAME, IMAGE_DIR) or _IMAGE_NAME.fullmatch(name), f"unexpected file {_shown(name)}")


def check_entries(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by name, after the checks that need only the directory (names, sizes, counts)."""
    infos = zf.infolist()
    _expect(len(infos) <= MAX_ENTRIES, f"it has {len(infos)} entries (the limit is {MAX_ENTRIES})")
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        check_name(name)
        if name == IMAGE_DIR:
            continue
        _expect(name not in entries, f"the file {_shown(name)} appears twice")
        _expect(not info.flag_bits & 0x1, f"{_shown(name)} is encrypted")
        _expect(info.compress_type in _ALLOWED_COMPRESSION, f"{_shown(name)} uses an unsupported compression")
        limit = MAX_JSON_BYTES if name == JSON_NAME else MAX_IMAGE_BYTES
        _expect(info.file_size <= limit, f"{_shown(name)} is too large ({info.file_size} bytes, limit {limit})")
        total += info.file_size
        _expect(total <= MAX_TOTAL_BYTES, f"its contents exceed {MAX_TOTAL_BYTES // 1024**2} MB")
        entries[name] = info
    _expect(JSON_NAME in entries, f"{JSON_NAME} is missing (is this an exported conversation?)")
    return entries


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The bytes of one entry, never more than it declares (a lying size fails its checksum)."""
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError):
        data = None
    _expect(data is not None and len(data) == info.file_size, f"{_shown(info.filename)} is damaged")
    return data


def _str_list(value, what: str, limit: int) -> tuple[str, ...]:
    _expect(isinstance(value, list) and len(value) <= limit, f"{what} must be a list of at most {limit} file names")
    for name in value:
        _expect(isinstance(name, str) and _IMAGE_NAME.fullmatch(name) is not None, f"{what} has a bad file name")
    return tuple(value)


def parse_turn(t, n: int) -> TurnPlan:
    where = f"turn {n}"
    _expect(isinstance(t, dict), f"{where} must be an object")
    missing = sorted({"kind", "prompt", "settings", "status", "inputs", "outputs"} - t.keys())
    _expect(not missing, f"{where} lacks {', '.join(missing)}")
    _expect(t["kind"] in KINDS, f"{where} has an unknown kind")
    _expect(isinstance(t["prompt"], str) and len(t["prompt"]) <= MAX_TEXT_CHARS, f"{where}: the prompt must be text")
    _expect(isinstance(t["settings"], dict), f"{where}: settings must be an object")
    _expect(t.get("seed") is None or valid_seed(t["seed"]), f"{where}: the seed must be a whole number")
    _expect(t["status"] in STATUSES, f"{where} has an unknown status")
    error = t.get("error")
    _expect(error is None or (isinstance(error, str) and len(error) <= ERROR_MAX), f"{where}: the error must be text")
    timings = t.get("timings", {})
    _expect(isinstance(timings, dict), f"{where}: timings must be an object")
    inputs = _str_list(t["inputs"], f"{where}: inputs", MAX_INPUTS)
    outputs = _str_list(t["outputs"], f"{where}: outputs", MAX_OUTPUTS)
    _expect(len(set(outputs)) == len(outputs), f"{where} lists an output twice")
    _expect(not outputs or t["status"] == "done", f"{where} has images but did not finish")
    seeds = t.get("seeds", [])
    ok = isinstance(seeds, list) and len(seeds) == len(outputs) and all(valid_seed(s) for s in seeds)
    _expect(ok, f"{where}: seeds must be one whole number per output")
    version_of = t.get("version_of")
    ok = version_of is None or (type(version_of) is int and 1 <= version_of < n)
    _expect(ok, f"{where}: version_of must name an earlier turn")
    shown = t.get("shown", True)
    _expect(isinstance(shown, bool), f"{where}: shown must be true or false")
    return TurnPlan(
        t["kind"], t["prompt"], t["settings"], t.get("seed"), t["status"], error, timings, inputs, outputs,
        tuple(seeds), version_of, shown,
    )  # fmt: skip


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_document(data: bytes) -> ArchivePlan:
    """The archive's plan from the bytes of ``conversation.json``; ValidationError for anything unexpected."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _problem(f"{JSON_NAME} is not valid JSON") from None
    _expect(isinstance(doc, dict), f"{JSON_NAME} is not a JSON object")
    _expect(doc.get("format") == FORMAT, "it is not a Qwen Image Chat conversation export")
    version = doc.get("version")
    _expect(type(version) is int and version >= 1, "its format version is missing or invalid")
    _expect(version <= VERSION, "it was made by a newer version of this program")
    title = doc.get("title")
    _expect(title is None or (isinstance(title, str) and len(title) <= 5 * TITLE_MAX), "the title must be text")
    turns = doc.get("turns")
    _expect(isinstance(turns, list) and len(turns) <= MAX_TURNS, f"turns must be a list of at most {MAX_TURNS}")
    plan = ArchivePlan(title, tuple(parse_turn(t, n) for n, t in enumerate(turns, 1)))
    for n, turn in enumerate(plan.turns, 1):
        original = plan.turns[turn.version_of - 1] if turn.version_of else None
        _expect(original is None or original.version_of is None, f"turn {n} is a version of a version")
    return plan


def check_references(plan: ArchivePlan, names) -> None:
    """Every file named exists; an image is made by one turn and used only by later ones."""
    made_by: dict[str, int] = {}
    for n, turn in enumerate(plan.turns, 1):
        for name in turn.outputs:
            _expect(name not in made_by, f"{_shown(name)} is the output of two turns")
            made_by[name] = n
    for n, turn in enumerate(plan.turns, 1):
        for name in turn.inputs + turn.outputs:
            _expect(name in names, f"turn {n} refers to {_shown(name)}, which is not in the archive")
        for name in turn.inputs:
            _expect(made_by.get(name, 0) < n, f"turn {n} uses {_shown(name)} before it is made")


def load_png(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The entry as a fully decoded PIL image, if it is a sound PNG of acceptable size."""
    from PIL import Image

    data = read_entry(zf, info)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = probe.format, probe.size
                if fmt == "PNG" and 0 < width * height <= MAX_PIXELS:
                    probe.verify()
            if fmt == "PNG" and 0 < width * height <= MAX_PIXELS:
                image = Image.open(io.BytesIO(data))
                image.load()
                return image
    except Exception:  # untrusted bytes: any decoder failure means a bad file
        pass
    raise _problem(f"{_shown(info.filename)} is not a valid PNG image (or exceeds {MAX_PIXELS // 10**6} megapixels)")


# -- import -------------------------------------------------------------------------------------------------------


def import_conversation(store, owner: str, zip_path: Path) -> str:
    """Add the archive's conversation for ``owner`` (new ids throughout); return the new conversation's id."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ValidationError("This file is not a readable zip archive.", "archive") from None
    with zf:
        entries = check_entries(zf)
        plan = parse_document(read_entry(zf, entries[JSON_NAME]))
        check_references(plan, entries.keys())
        for name, info in entries.items():
            if name != JSON_NAME:
                load_png(zf, info).close()
        return _add(store, owner, zf, entries, plan)


def _add(store, owner: str, zf: zipfile.ZipFile, entries: dict, plan: ArchivePlan) -> str:
    conv_id = store.create_conversation(owner, plan.title)
    _expect(conv_id is not None, "the owner is not valid")
    try:
        ids: dict[str, str] = {}
        made: list[str] = []  # the new id of each turn, in order
        for turn in plan.turns:
            for name in turn.inputs:
                if name not in ids:
                    record = store.add_input_image(owner, conv_id, load_png(zf, entries[name]))
                    _expect(record is not None, "the conversation was deleted during the import")
                    ids[name] = record.id
            inputs = [ids[n] for n in turn.inputs]
            original = made[turn.version_of - 1] if turn.version_of else None
            new = store.start_turn(owner, conv_id, turn.kind, turn.prompt, turn.settings, inputs, version_of=original)
            _expect(new is not None, "the conversation was deleted during the import")
            made.append(new.id)
            if turn.status == "done":
                images = [load_png(zf, entries[name]) for name in turn.outputs]
                done = store.finish_turn(owner, new.id, images, list(turn.seeds), turn.settings, turn.timings)
                _expect(done is not None, "the conversation was changed during the import")
                ids.update(zip(turn.outputs, (r.id for r in done.outputs), strict=True))
            elif turn.status == "running":
                store.fail_turn(owner, new.id, _EXPORT_INTERRUPTED)
            else:
                store.fail_turn(owner, new.id, turn.error or turn.status, turn.status)
        for new_id, turn in zip(made, plan.turns, strict=True):  # the versions shown as they were
            if turn.shown and any(t.version_of for t in plan.turns):
                store.show_version(owner, new_id)
    except BaseException as exc:
        store.delete_conversation(owner, conv_id)
        if isinstance(exc, ValueError) and not isinstance(exc, ValidationError):  # the store refused a value
            raise _problem(str(exc)) from None
        raise
    return conv_id
