"""The turn service: the one way a turn starts, whoever asks (chat, regenerate, branch, Generate, Edit, an API).

Starting a turn means: line up the input images, validate the request with the backend (nothing is stored for an
invalid one), create the conversation if there is none, store the new uploads, and queue the job. The input images
travel as one list of ``TurnImage`` (an image and its stored id, or no id for a new upload), in the order the
prompt names them (``<image1>`` first).

What a chat message edits (``edit_target``): the image chosen with "Edit this image" (the branch), followed by any
attachments; else the attachments alone (they replace the implicit image); else the latest image of the conversation
(the version shown of its last turn with images); else nothing, and the message generates. Regenerating a turn makes
another version of it in its place (``Turn.version``), shown at once; ``show_version`` switches between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from qwen_image.backend import Backend
from qwen_image.generation import GenerationRequest, ValidationError
from qwen_image.images import ImageInputError, open_image

from .faults import StorageError
from .jobs import JobManager, JobSnapshot
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


class TurnService:
    def __init__(self, backend: Backend, store: Store, jobs: JobManager):
        self.backend = backend
        self.store = store
        self.jobs = jobs

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
    ) -> JobSnapshot:
        """Start a turn in the owner's conversation (a new one when None or gone); returns the queued job.

        ``request`` carries no images: ``inputs`` become its references, in order. ``label`` is the prompt shown in
        the conversation (the request's prompt by default). ``version_of``: a turn this one is another version of.
        Raises ValidationError (Busy included) with a message for the user; nothing stays behind from a turn that could
        not start in a conversation it created.
        """
        resolved = self.backend.resolve(replace(request, images=tuple(i.image for i in inputs)))
        if conversation_id is not None and self.store.get_conversation(owner, conversation_id) is None:
            conversation_id = None
        created = conversation_id is None
        if created:
            conversation_id = self.store.create_conversation(owner)
            if conversation_id is None:
                raise ValidationError("This session is not valid any more; reload the page.")
        try:
            ids = [i.id or self._keep(owner, conversation_id, i.image) for i in inputs]
            text = label if label is not None else request.prompt
            return self.jobs.submit(owner, conversation_id, resolved, ids, text.strip(), version_of=version_of)
        except BaseException:
            if created:
                with suppress(StorageError):  # the fault that stopped the turn may stop this too; its message stands
                    self.store.delete_conversation(owner, conversation_id)
            raise

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
    ) -> JobSnapshot:
        """A chat message: it edits the chosen image (``branch``, an image id) followed by any attachments, or the
        attachments alone, or else the conversation's latest image; with no image at all it generates.

        One image is made at a time per conversation: a message while its job runs is refused (BUSY_HERE)."""
        conv = self.store.get_conversation(owner, conversation_id) if conversation_id else None
        if conv is not None and self.jobs.active(owner, conv.id):
            raise ValidationError(BUSY_HERE)
        if branch and self.store.get_image(owner, branch) is None:
            raise ValidationError("The image chosen to edit is no longer available; choose another one.")
        target = self.target(owner, conv.id if conv else None, branch, len(attachments))
        base = self.stored(owner, [target.base.id]) if target.base is not None else []
        return self.start(owner, conv.id if conv else None, request, [*base, *attachments])

    def regenerate(self, owner: str, conversation_id: str | None, turn_id: str | None = None) -> JobSnapshot:
        """Run a turn again with a new seed, as a new version of it shown in its place: ``turn_id`` (any of its
        versions), else the latest turn."""
        turn = self.store.get_turn(owner, turn_id) if turn_id else None
        conv = self.store.get_conversation(owner, conversation_id) if conversation_id else None
        if turn is None and conv is not None and conv.turns:
            turn = conv.turns[-1]
        if turn is None or conv is None or turn.conversation_id != conv.id:
            raise ValidationError("There is nothing to regenerate yet.")
        if any(s.turn_id in turn.version_ids for s in self.jobs.active(owner, conv.id)):
            raise ValidationError(STILL_RUNNING)
        inputs = self.stored(owner, [img.id for img in turn.inputs])
        request = stored_request(turn.prompt, turn.settings)
        return self.start(owner, conv.id, request, inputs, label=turn.prompt, version_of=turn.id)

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
