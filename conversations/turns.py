"""The turn service: the one way a turn starts, whoever asks (chat, regenerate, branch, Generate, Edit, an API).

Starting a turn means: line up the input images, validate the request with the backend (nothing is stored for an
invalid one), create the conversation if there is none, store the new uploads, and queue the job. The input images
travel as one list of ``TurnImage`` (an image and its stored id, or no id for a new upload), in the order the
prompt names them (``<image1>`` first).

What a chat message edits (``edit_target``): the image chosen with "Edit this image" (the branch), followed by any
attachments; else the attachments alone (they replace the implicit image); else the latest image of the conversation
(the version shown of its last turn with images); else nothing, and the message generates. Regenerating a turn makes
another version of it in its place (``Turn.version``), shown at once; ``show_version`` switches between them.

Any turn may first have its prompt rewritten by the prompt enhancer (``Enhance``), before validation: the rewrite is
what is drawn, the user's words are kept with it (settings ``original_prompt``), and when enhancing fails the turn goes
on with the prompt as written and a one-line note. A chat message is rewritten in the background
(``chat_rewritten``, ``rewrites.py``), so that the page streams the rewrite and never waits on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from qwen_image.backend import Backend
from qwen_image.enhance import Enhancement, Enhancer, edited, resolve_enhanced, task_for
from qwen_image.enhance.base import unchanged_note
from qwen_image.generation import GenerationRequest, ValidationError, check_text
from qwen_image.images import ImageInputError, open_image

from .faults import StorageError
from .jobs import JobManager, JobSnapshot
from .rewrites import Rewrite, Rewrites
from .settings import stored_request
from .store import ImageRecord, Store, Turn

STILL_RUNNING = "That image is still being made; try again once it appears."
BUSY_HERE = "An image is still being made in this conversation: wait for it (or stop it) before sending the next one."


@dataclass(frozen=True)
class EditTarget:
    """What the next chat message will send as references: ``base`` (a stored image, or None) then the attachments.

    ``source`` says why: "branch" (chosen with Edit this image), "latest" (the implicit latest image),
    "attachments" (attachments only) or "none" (the message generates). ``turn_number`` is the 1-based place of the
    turn that made ``base`` (None when it is not a result of this conversation).
    """

    source: str
    base: ImageRecord | None = None
    turn_number: int | None = None
    attachments: int = 0

    @property
    def count(self) -> int:
        return (1 if self.base is not None else 0) + self.attachments


def edit_target(conversation, branch: ImageRecord | None, attachments: int) -> EditTarget:
    """The rule for what a chat message edits (pure: from the conversation, the chosen image and the attachments)."""
    turns = list(conversation.turns) if conversation is not None else []

    def number(image: ImageRecord | None) -> int | None:
        found = [i for i, t in enumerate(turns, 1) if image is not None and any(o.id == image.id for o in t.outputs)]
        return found[0] if found else None

    if branch is not None:
        return EditTarget("branch", branch, number(branch), attachments)
    if attachments:
        return EditTarget("attachments", None, None, attachments)
    latest = conversation.latest_output() if conversation is not None else None
    if latest is not None:
        return EditTarget("latest", latest, number(latest))
    return EditTarget("none")


@dataclass(frozen=True)
class TurnImage:
    image: object  # PIL image, checked (qwen_image.images.open_image)
    id: str | None = None  # the stored image's id; None for a new upload, stored once the request is valid


@dataclass(frozen=True)
class Enhance:
    """Rewrite a turn's prompt first. ``rewrite``: a rewrite the user already has (edited or kept), used as it is;
    otherwise the enhancer writes one, streaming it to ``on_text``; ``cancel`` stops it (the turn does not start)."""

    rewrite: str | None = None
    on_text: Callable[[str], None] | None = None
    cancel: threading.Event | None = None


class TurnService:
    def __init__(self, backend: Backend, store: Store, jobs: JobManager, enhancer: Enhancer | None = None):
        self.backend = backend
        self.store = store
        self.jobs = jobs
        self.enhancer = enhancer
        self._enhancing: dict[str, set[threading.Event]] = {}  # owner -> cancel events of rewrites under way
        self._enhancing_lock = threading.Lock()
        self.rewrites = Rewrites()  # chat messages being rewritten before their turn starts (``chat_rewritten``)

    # -- the prompt enhancer --------------------------------------------------------------------------------------
    def enhance(
        self,
        request: GenerationRequest,
        inputs: Sequence[TurnImage] = (),
        step: Enhance | None = None,
        owner: str | None = None,
    ) -> Enhancement:
        """The rewrite of ``request``'s prompt for these input images, or the prompt unchanged with a one-line note.
        Raises ValidationError for a prompt no model would take, Cancelled when stopped (also by ``stop_enhancing``
        for ``owner``)."""
        step = step or Enhance()
        prompt = check_text(request.prompt, "prompt")
        if step.rewrite is not None:
            return edited(prompt, step.rewrite)
        if not prompt:
            return Enhancement(prompt, prompt)
        if self.enhancer is None:
            return Enhancement(prompt, prompt, note=unchanged_note("no prompt enhancer is configured"))
        cancel = step.cancel or threading.Event()
        task = task_for(replace(request, prompt=prompt), self.backend.spec, [i.image for i in inputs])
        with self._registered(owner, cancel):
            return self.enhancer.enhance(task, step.on_text, cancel)

    def stop_enhancing(self, owner: str) -> int:
        """Stop the owner's rewrites under way; returns how many were signalled."""
        with self._enhancing_lock:
            events = list(self._enhancing.get(owner, ()))
        for event in events:
            event.set()
        return len(events)

    @contextmanager
    def _registered(self, owner: str | None, cancel: threading.Event):
        """``cancel`` reachable by ``stop_enhancing(owner)`` while the rewrite runs, unless it is a chat message's
        rewrite: that one is stopped through ``rewrites``, by its conversation or its bubble, never by a Stop
        elsewhere."""
        if owner is None or self.rewrites.owns(cancel):
            yield
            return
        with self._enhancing_lock:
            self._enhancing.setdefault(owner, set()).add(cancel)
        try:
            yield
        finally:
            with self._enhancing_lock:
                events = self._enhancing.get(owner, set())
                events.discard(cancel)
                if not events:
                    self._enhancing.pop(owner, None)

    # -- input images ---------------------------------------------------------------------------------------------
    def uploads(self, files) -> list[TurnImage]:
        """Checked images from uploaded files (paths, or dicts / objects with a ``path``), not stored yet."""
        images = []
        for i, f in enumerate(files or [], 1):
            path = f.get("path") if isinstance(f, dict) else getattr(f, "path", f)
            if not isinstance(path, (str, Path)):
                raise ImageInputError(f"attachment {i} is not a file")
            images.append(TurnImage(open_image(path, keep_alpha=self.backend.spec.transparent, name=f"attachment {i}")))
        return images

    def stored(self, owner: str, image_ids: Sequence[str]) -> list[TurnImage]:
        """The owner's stored images, opened."""
        from PIL import Image

        out = []
        for image_id in image_ids:
            rec = self.store.get_image(owner, image_id)
            if rec is None:
                raise ValidationError("That image is no longer available.")
            with Image.open(rec.path) as im:
                im.load()
                out.append(TurnImage(im.convert("RGBA") if im.mode == "RGBA" else im.convert("RGB"), image_id))
        return out

    def result_image(self, owner: str, turn_id: str | None) -> ImageRecord:
        """The first image a turn made (to edit next, or to send elsewhere), or a message saying why there is none."""
        turn = self.store.get_turn(owner, turn_id) if turn_id else None
        if turn is not None and turn.status == "running":
            raise ValidationError(STILL_RUNNING)
        if turn is None or not turn.outputs:
            raise ValidationError("Select a turn that has an image first.")
        return turn.outputs[0]

    # -- starting turns -------------------------------------------------------------------------------------------
    def start(
        self,
        owner: str,
        conversation_id: str | None,
        request: GenerationRequest,
        inputs: Sequence[TurnImage] = (),
        label: str | None = None,
        version_of: str | None = None,
        enhance: Enhance | None = None,
    ) -> JobSnapshot:
        """Start a turn in the owner's conversation (a new one when None or gone); returns the queued job.

        ``request`` carries no images: ``inputs`` become its references, in order. ``label`` is the prompt shown in
        the conversation (the request's prompt by default). ``version_of``: a turn this one is another version of.
        ``enhance``: rewrite the prompt first (a failure to rewrite becomes one of the job's notes). Raises
        ValidationError (Busy included) with a message for the user, Cancelled when the rewrite is stopped; nothing
        stays behind from a turn that could not start in a conversation it created.
        """
        request = replace(request, images=tuple(i.image for i in inputs))
        notes: tuple = ()
        if enhance is None:
            resolved = self.backend.resolve(request)
        else:
            enhancement = self.enhance(request, inputs, enhance, owner)
            resolved, enhancement = resolve_enhanced(self.backend.resolve, request, enhancement)
            notes = (enhancement.note,) if enhancement.note else ()
        if conversation_id is not None and self.store.get_conversation(owner, conversation_id) is None:
            conversation_id = None
        created = conversation_id is None
        if created:
            conversation_id = self._new_conversation(owner)
        try:
            ids = [i.id or self._keep(owner, conversation_id, i.image) for i in inputs]
            text = label if label is not None else request.prompt
            return self.jobs.submit(
                owner, conversation_id, resolved, ids, text.strip(), version_of=version_of, notes=notes
            )
        except BaseException:
            if created:
                with suppress(StorageError):  # the fault that stopped the turn may stop this too; its message stands
                    self.store.delete_conversation(owner, conversation_id)
            raise

    def _new_conversation(self, owner: str) -> str:
        conversation_id = self.store.create_conversation(owner)
        if conversation_id is None:
            raise ValidationError("This session is not valid any more; reload the page.")
        return conversation_id

    def _keep(self, owner: str, conversation_id: str, image) -> str:
        record = self.store.add_input_image(owner, conversation_id, image)
        if record is None:
            raise ValidationError("That conversation no longer exists; start a new chat.")
        return record.id

    def target(self, owner: str, conversation_id: str | None, branch: str | None, attachments: int) -> EditTarget:
        """What a chat message with ``attachments`` attached would edit now (see ``edit_target``)."""
        conv = self.store.get_conversation(owner, conversation_id) if conversation_id else None
        chosen = self.store.get_image(owner, branch) if branch else None
        return edit_target(conv, chosen, attachments)

    def chat(
        self,
        owner: str,
        conversation_id: str | None,
        request: GenerationRequest,
        attachments: Sequence[TurnImage] = (),
        branch: str | None = None,
        enhance: Enhance | None = None,
    ) -> JobSnapshot:
        """A chat message: it edits the chosen image (``branch``, an image id) followed by any attachments, or the
        attachments alone, or else the conversation's latest image; with no image at all it generates.

        One image is made at a time per conversation: a message while its job runs is refused (BUSY_HERE)."""
        self._idle(owner, conversation_id)
        conv_id, inputs = self.chat_inputs(owner, conversation_id, attachments, branch)
        return self.start(owner, conv_id, request, inputs, enhance=enhance)

    def chat_rewritten(
        self,
        owner: str,
        conversation_id: str | None,
        request: GenerationRequest,
        attachments: Sequence[TurnImage] = (),
        branch: str | None = None,
    ) -> Rewrite:
        """A chat message whose prompt the enhancer rewrites first, in the background (``rewrites``): checked and
        placed now (what it edits is what the composer shows now; a new conversation is made for it, and removed again
        when no turn starts), started once rewritten. Raises ValidationError as ``chat`` does."""
        self._idle(owner, conversation_id)
        conv_id, inputs = self.chat_inputs(owner, conversation_id, attachments, branch)
        self.backend.resolve(replace(request, images=tuple(i.image for i in inputs)))  # the message as written is valid
        created = conv_id is None
        if created:
            conv_id = self._new_conversation(owner)

        def start(on_text, cancel) -> JobSnapshot:
            try:
                return self.start(owner, conv_id, request, inputs, enhance=Enhance(on_text=on_text, cancel=cancel))
            except BaseException:
                conv = self.store.get_conversation(owner, conv_id) if created else None
                if conv is not None and not conv.turns:
                    self.store.delete_conversation(owner, conv_id)
                raise

        return self.rewrites.begin(owner, conv_id, request.prompt, start, len(attachments))

    def busy(self, owner: str, conversation_id: str | None) -> bool:
        """An image or a rewrite is under way in this conversation."""
        return bool(conversation_id) and bool(
            self.jobs.active(owner, conversation_id) or self.rewrites.active(owner, conversation_id)
        )

    def _idle(self, owner: str, conversation_id: str | None) -> None:
        """Refuse a message to a conversation with an image (or a rewrite) under way."""
        if self.busy(owner, conversation_id):
            raise ValidationError(BUSY_HERE)

    def chat_inputs(
        self, owner: str, conversation_id: str | None, attachments: Sequence[TurnImage] = (), branch: str | None = None
    ) -> tuple[str | None, list[TurnImage]]:
        """(the conversation's id or None, the images a chat message would edit, in order): the edit target's image
        (``edit_target``), then the attachments. Also what "enhance only" shows the enhancer."""
        conv = self.store.get_conversation(owner, conversation_id) if conversation_id else None
        chosen = self.store.get_image(owner, branch) if branch else None
        if branch and chosen is None:
            raise ValidationError("The image chosen to edit is no longer available; choose another one.")
        target = edit_target(conv, chosen, len(attachments))
        base = self.stored(owner, [target.base.id]) if target.base is not None else []
        return (conv.id if conv else None), [*base, *attachments]

    def regenerate(
        self, owner: str, conversation_id: str | None, turn_id: str | None = None, enhance: Enhance | None = None
    ) -> JobSnapshot:
        """Run a turn again with a new seed, as a new version of it shown in its place: ``turn_id`` (any of its
        versions), else the latest turn. An enhanced turn draws its stored rewrite again, unless ``enhance`` asks for
        a new one (of the user's own words)."""
        turn = self.store.get_turn(owner, turn_id) if turn_id else None
        conv = self.store.get_conversation(owner, conversation_id) if conversation_id else None
        if turn is None and conv is not None and conv.turns:
            turn = conv.turns[-1]
        if turn is None or conv is None or turn.conversation_id != conv.id:
            raise ValidationError("There is nothing to regenerate yet.")
        if any(s.turn_id in turn.version_ids for s in self.jobs.active(owner, conv.id)):
            raise ValidationError(STILL_RUNNING)
        inputs = self.stored(owner, [img.id for img in turn.inputs])
        rewrite = turn.settings.get("prompt") if turn.settings.get("original_prompt") and enhance is None else None
        request = stored_request(rewrite or turn.prompt, turn.settings)
        return self.start(owner, conv.id, request, inputs, label=turn.prompt, version_of=turn.id, enhance=enhance)

    def show_version(self, owner: str, turn_id: str | None, step: int) -> Turn:
        """Show the version ``step`` places after (or before, when negative) this one, within its turn's versions."""
        turn = self.store.get_turn(owner, turn_id) if turn_id else None
        if turn is None:
            raise ValidationError("That turn is no longer available.")
        index = max(0, min(len(turn.version_ids) - 1, turn.version - 1 + int(step)))
        shown = self.store.show_version(owner, turn.version_ids[index])
        if shown is None:
            raise ValidationError("That turn is no longer available.")
        return shown
