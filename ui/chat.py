"""The Chat tab: the conversation, the composer (what the next message edits, the message box, the output shape and
"Advanced"), and the per-bubble actions.

The page never waits on a job: sending starts a turn and returns at once; a timer redraws the open conversation while
jobs run (so switching conversations never pulls the view back). Every handler takes the session's owner from state
(or the logged-in user) and only touches that owner's data. A user's mistake is a toast that leaves the page as it
was (``toasts``); the API's endpoints (``ui/chat_api.py``) raise instead.
"""

from __future__ import annotations

import functools
import html
import inspect
from dataclasses import dataclass

import gradio as gr

from conversations.rewrites import FAILED, STOPPED
from conversations.settings import AUTO, TurnSettings
from conversations.turns import STILL_RUNNING, edit_target
from qwen_image.generation import ValidationError
from qwen_image.metadata import read_settings

from . import chat_enhance, render
from .context import PRIVATE, TOAST_S, WARN_S, AppContext
from .i18n import Tr, lang_of, t
from .progress import outcome
from .sessions import session_of
from .settings import Panel, auto_label, ratio_choices
from .sidebar import list_html

POLL_S = 0.5  # how often the page looks at running jobs

EXAMPLES = (
    "example.fox",
    "example.poster",
    "example.room",
    "example.map",
)


def examples(tr: Tr) -> list[dict]:
    """Suggested prompts for an empty chat, in the browser's language."""
    return [{"text": tr(k)} for k in EXAMPLES]


@dataclass(frozen=True)
class ChatTab:
    chatbot: gr.Chatbot
    chip: gr.HTML
    msg: gr.MultimodalTextbox
    panel: Panel
    reuse_png: gr.UploadButton
    timer: gr.Timer
    conv: gr.State  # the open conversation's id
    branch: gr.State  # the image id the next message edits, when chosen ("Edit this image")
    watching: gr.State  # {"jobs": ids running at the last look, "rewrites": the same for rewrites, "sig": drawn}
    one_shot: gr.State  # True after "Reuse settings": its seed is for the next message only
    enhance: gr.Checkbox  # rewrite each message's prompt before drawing (hidden without an enhancer)
    enhance_only: gr.Button
    redo: gr.State  # the box holds an enhanced prompt: {"kind": "only" | "rerun", "original", "turn", "n", ...}
    redo_chip: gr.HTML  # says so above the box


def layout(ctx: AppContext) -> ChatTab:
    """The conversation and the composer, one column."""
    available = ctx.turns.enhancer is not None
    with gr.Column(elem_id="qic-chatcol"):
        chatbot = gr.Chatbot(
            label=t("chat.label"),
            show_label=False,
            elem_id="qic-chat",
            height="100%",
            group_consecutive_messages=False,
            placeholder=None,
            examples=examples(Tr()),
            feedback_options=None,
            buttons=[],
            allow_file_downloads=False,
            autoscroll=True,
        )
        with gr.Column(elem_id="qic-composer"):
            with gr.Row(elem_id="qic-chips"):  # what the next message edits; whether the box holds a rewrite
                chip = gr.HTML("", elem_id="qic-chip", apply_default_css=False, js_on_load=None)
                redo_chip = gr.HTML("", elem_id="qic-redo", apply_default_css=False)
            msg = gr.MultimodalTextbox(
                placeholder=t("composer.placeholder_new"),
                label=t("composer.label"),
                show_label=False,
                file_count="multiple",
                file_types=["image"],
                sources=["upload"],
                max_plain_text_length=20000,
                max_lines=8,  # a long (enhanced) prompt scrolls inside the box
                submit_btn=True,
                stop_btn=False,
                autofocus=True,
                elem_id="qic-msg",
            )
            with gr.Row(elem_id="qic-options", equal_height=False):
                enhance = gr.Checkbox(
                    False, label=t("enhance.chat_toggle"), container=False, visible=available, min_width=0, scale=0,
                    elem_id="qic-enhance",
                )  # fmt: skip
                only = gr.Button(
                    t("enhance.only"), size="sm", visible=available, min_width=0, scale=0, elem_id="qic-enhance-only"
                )
                reuse_box = []

                def extra():
                    reuse_box.append(gr.UploadButton(t("settings.reuse_png"), file_types=[".png"], size="sm"))

                panel = Panel(ctx.spec, ctx.backend.capabilities, extra=extra, compact=True)
    return ChatTab(
        chatbot, chip, msg, panel, reuse_box[0], gr.Timer(POLL_S, active=False),
        gr.State(None), gr.State(None), gr.State({}), gr.State(False), enhance, only, gr.State(None), redo_chip,
    )  # fmt: skip


@dataclass
class Page:
    """What one browser shows, from the inputs every chat event reads (``Wiring.common``)."""

    owner: str
    conv: str | None
    branch: str | None
    query: str
    pages: int
    tz: int
    watching: dict
    tr: Tr
    session: str | None = None  # the Gradio session (its essentials are remembered: ui/sessions.py)


def warn(exc: Exception, tr: Tr) -> None:
    """A user's mistake as a warning toast, in the page's language (a gr.Error's message is HTML already; one that
    came from below the UI, e.g. through ``user_error``, is English and translated here)."""
    if isinstance(exc, gr.Error):
        plain = html.unescape(str(exc.message))
        said = tr.message(plain)
        gr.Warning(exc.message if said == plain else render.escape_html(said), duration=WARN_S)
    else:
        gr.Warning(render.escape_html(tr.message(str(exc))), duration=WARN_S)


def _tr_of(fn, args, kwargs) -> Tr:
    """The page's language for a wrapped handler: from its ``request`` argument (Gradio passes it by position)."""
    try:
        request = inspect.signature(fn).bind_partial(*args, **kwargs).arguments.get("request")
    except TypeError:
        request = None
    return Tr(lang_of(request))


def toasts(fn):
    """For page events: a user's mistake (gr.Error, ValidationError) becomes a warning toast, in the page's language,
    and nothing changes."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, ValidationError) as exc:
            warn(exc, _tr_of(fn, args, kwargs))
        return gr.skip()

    return run


def toasts_each(fn):
    """``toasts`` for a generator handler (the Generate and Edit tabs): a mistake before or while it runs is a toast."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except (gr.Error, ValidationError) as exc:
            warn(exc, _tr_of(fn, args, kwargs))

    return run


def page_and_api(button, fn, inputs: list, outputs: list, api_name: str, then: dict | None = None, **events) -> None:
    """A generator handler wired twice: to the page's ``button`` (private; a mistake is a toast) and to a hidden button
    for the named API endpoint ``api_name`` (a mistake is an error for the caller). ``then``: an event after the page's
    (e.g. the conversation list: an API caller has no page to show it)."""
    page = button.click(toasts_each(fn), inputs, outputs, api_name=f"page_{api_name}", **events, **PRIVATE)
    gr.Button(api_name, visible=False).click(fn, inputs, outputs, api_name=api_name, **events)
    if then is not None:
        page.then(**then)


class ChatHandlers:
    def __init__(self, ctx: AppContext, tab: ChatTab, listing: gr.HTML):
        self.ctx = ctx
        self.tab = tab
        self.listing = listing

    # -- the view -------------------------------------------------------------------------------------------------
    @property
    def outputs(self) -> list:
        tab = self.tab
        ratio = tab.panel.components["ratio"]
        return [tab.chatbot, tab.conv, tab.branch, tab.chip, tab.msg, self.listing, tab.timer, tab.watching, ratio]

    @property
    def redo_outputs(self) -> list:
        return [self.tab.redo, self.tab.redo_chip]

    def page(self, owner_state, conv, branch, query, pages, tz, watching, request=None) -> Page:
        owner, session = self.ctx.owner(owner_state, request), session_of(request)
        if not owner_state:  # Gradio let this session's state go (ui/sessions.py): what it had open comes back
            kept = self.ctx.sessions.recall(session)
            conv, branch = conv or kept.conv, branch or kept.branch
        return Page(
            owner=owner,
            conv=conv if isinstance(conv, str) else None,
            branch=branch if isinstance(branch, str) else None,
            query=query if isinstance(query, str) else "",
            pages=pages if isinstance(pages, int) and pages > 0 else 1,
            tz=int(tz) if isinstance(tz, (int, float)) else 0,
            watching=watching if isinstance(watching, dict) else {},
            tr=Tr(lang_of(request)),
            session=session,
        )

    def links(self) -> render.Links:
        return render.Links(self.ctx.media.preview_url, self.ctx.media.download_link)

    def view(self, page: Page, conv_id=..., branch=..., **extra) -> dict:
        """Everything that shows the open conversation: the chat, the composer, the list, the job timer."""
        ctx = self.ctx
        conv_id = page.conv if conv_id is ... else conv_id
        branch = page.branch if branch is ... else branch
        conv = ctx.store.get_conversation(page.owner, conv_id) if conv_id else None
        if conv is None:
            conv_id, branch = None, None
        chosen = ctx.store.get_image(page.owner, branch) if branch else None
        if chosen is None:
            branch = None
        active = ctx.jobs.active(page.owner)
        live = {s.turn_id: s for s in active if s.conversation_id == conv_id}
        rewrites = ctx.turns.rewrites.active(page.owner)
        here = [r for r in rewrites if r.conversation_id == conv_id]  # messages whose prompt is being rewritten
        links = self.links()
        target = edit_target(conv, chosen, 0)
        busy = bool(live) or bool(here)
        page.conv, page.branch = conv_id, branch
        ctx.sessions.remember(page.session, conv=conv_id, branch=branch)
        auto = auto_label(target.source != "none", page.tr)
        return {
            self.tab.chatbot: gr.update(
                value=render.conversation_messages(conv, links, page.tr, live, here), examples=examples(page.tr)
            ),
            self.tab.panel.components["ratio"]: gr.update(choices=ratio_choices(ctx.spec, AUTO, False, auto=auto)),
            self.tab.conv: conv_id,
            self.tab.branch: branch,
            self.tab.chip: render.chip_html(target, links, page.tr),
            self.tab.msg: gr.update(
                placeholder=render.placeholder(target, page.tr), submit_btn=not busy, stop_btn=busy
            ),
            self.listing: list_html(ctx, page.owner, page.tr, conv_id, page.query, page.pages, page.tz),
            self.tab.timer: gr.Timer(active=bool(active) or bool(rewrites)),
            self.tab.watching: {
                "jobs": [s.id for s in active],
                "rewrites": [r.id for r in rewrites],
                "sig": _signature(conv_id, branch, active, rewrites),
            },
            **extra,
        }

    # -- turns ------------------------------------------------------------------------------------------------
    def send(self, message, page: Page, one_shot: bool, enhance=False, redo=None, **settings) -> dict:
        """A message: generates an image, or edits what the composer says (the chosen image, the attachments, or
        the latest image). Returns at once; the timer follows the job.

        ``enhance``: the prompt is rewritten first (in the background, streamed into the conversation), then drawn.
        ``redo``: the box holds an enhanced prompt, drawn as written with the user's words kept beside it: after
        "Enhance only" a new message, after a turn's "Edit" a new version of that turn."""
        text = (message or {}).get("text", "") if isinstance(message, dict) else str(message or "")
        files = (message or {}).get("files", []) if isinstance(message, dict) else []
        if not text.strip():
            raise gr.Error(page.tr("error.empty_prompt"))
        most = self.ctx.backend.capabilities.max_references
        if len(files) > most:
            raise gr.Error(page.tr("error.too_many", most=most))
        conv_id = chat_enhance.start_message(self.ctx, page, text, files, enhance, redo, settings)
        out = self.view(page, conv_id, None)
        out[self.tab.msg] = {**out[self.tab.msg], "value": None}  # the box empties once the message is taken
        out.update({self.tab.redo: None, self.tab.redo_chip: ""})
        if one_shot:  # "Reuse settings" fixed the seed for this message only
            out[self.tab.panel.components["randomize"]] = True
            out[self.tab.one_shot] = False
        return out

    def enhance_only(self, message, page: Page, redo=None, **settings):
        """ "Enhance only": the rewrite streams into the message box, for the user to read, edit and send."""
        yield from chat_enhance.enhance_only(self.ctx, self.tab, page, message, redo, settings)

    def act(self, page: Page, evt: dict) -> dict:
        """A button in a bubble or the composer: (action, value) from the page's bridge."""
        action, value = evt.get("act"), evt.get("value")
        value = value if isinstance(value, str) else ""
        turns, owner = self.ctx.turns, page.owner
        if action == "edit":
            image = turns.result_image(owner, value)
            return self.view(page, branch=image.id)
        if action == "unchip":
            return self.view(page, branch=None)
        if action == "regenerate":
            snap = turns.regenerate(owner, page.conv, value)
            return self.view(page, snap.conversation_id)
        if action == "version":
            turn_id, _, step = value.partition(":")
            turns.show_version(owner, turn_id, -1 if step == "-1" else 1)
            return self.view(page)
        if action == "rerun":  # a turn's enhanced prompt into the box: sending it makes a new version of the turn
            turn_id, text, redo = chat_enhance.rerun(self.ctx, page, value)
            out = self.view(page, turn_id)
            out[self.tab.msg] = {**out[self.tab.msg], "value": {"text": text, "files": []}}
            return {**out, self.tab.redo: redo, self.tab.redo_chip: render.redo_html(redo, page.tr)}
        if action == "unredo":
            return {self.tab.redo: None, self.tab.redo_chip: ""}
        if action == "stop" and turns.rewrites.get(owner, value) is not None:  # a rewrite before its turn
            count = turns.rewrites.stop(owner, value)
            gr.Info(page.tr("toast.stopping") if count else page.tr("toast.nothing_running"), duration=TOAST_S)
            return self.view(page)
        if action == "stop":
            turn = self.ctx.store.get_turn(owner, value)
            jobs = [s for s in self.ctx.jobs.active(owner) if turn is not None and s.turn_id == turn.id]
            for s in jobs:
                self.ctx.jobs.cancel(owner, s.id)
            gr.Info(page.tr("toast.stopping") if jobs else page.tr("toast.nothing_running"), duration=TOAST_S)
            return self.view(page)
        raise gr.Error(page.tr("error.unknown_action"))

    def stop_here(self, page: Page) -> dict:
        """The message box's Stop: this conversation's job."""
        turns = self.ctx.turns
        count = self.ctx.jobs.cancel(page.owner, conversation_id=page.conv) if page.conv else 0
        count += turns.rewrites.stop(page.owner, conversation_id=page.conv) if page.conv else 0
        count = count or turns.stop_enhancing(page.owner)  # "Enhance only" writing into the box
        gr.Info(page.tr("toast.stopping") if count else page.tr("toast.nothing_running"), duration=TOAST_S)
        return self.view(page)

    def tick(self, page: Page) -> dict:
        """While jobs run: redraw what changed (progress, results), announce ended jobs, stop when none is left."""
        active = self.ctx.jobs.active(page.owner)
        ended = [j for j in page.watching.get("jobs", []) if j not in {s.id for s in active}]
        for job_id in ended:
            snap = self.ctx.jobs.get(page.owner, job_id)
            if snap is not None:
                outcome(snap, page.tr)
        rewrites = self.ctx.turns.rewrites
        writing = rewrites.active(page.owner)
        back = None  # a message that started no turn: its words go back into the box
        for rewrite_id in page.watching.get("rewrites", []):
            r = rewrites.get(page.owner, rewrite_id) if rewrite_id not in {w.id for w in writing} else None
            if r is not None and r.state in (FAILED, STOPPED):
                if r.state == FAILED:
                    gr.Warning(render.escape_html(page.tr.message(r.error)), duration=WARN_S)
                back = r
            elif r is not None and r.job_id and r.job_id not in {s.id for s in active}:  # its job ended unseen
                snap = self.ctx.jobs.get(page.owner, r.job_id)
                if snap is not None and snap.finished:
                    outcome(snap, page.tr)
                    ended.append(r.job_id)
        sig = _signature(page.conv, page.branch, active, writing)
        if not ended and back is None and sig == page.watching.get("sig"):
            return {self.tab.timer: gr.Timer(active=False)} if not active and not writing else gr.skip()
        out = self.view(page)
        if back is not None:
            out[self.tab.msg] = {**out[self.tab.msg], "value": {"text": back.prompt, "files": []}}
        return out

    def undo(self, page: Page) -> dict:
        if self.ctx.turns.busy(page.owner, page.conv):
            raise gr.Error(page.tr("error.undo_running"))
        if not page.conv or not self.ctx.store.delete_last_turn(page.owner, page.conv):
            raise gr.Error(page.tr("error.nothing_to_undo"))
        return self.view(page, branch=None)

    def new_chat(self, page: Page) -> dict:
        return self.view(page, None, None)

    def open(self, page: Page, conv_id) -> dict:
        if not isinstance(conv_id, str) or self.ctx.store.get_conversation(page.owner, conv_id) is None:
            raise gr.Error(page.tr("side.no_such"))
        return self.view(page, conv_id, None)

    def example(self, page: Page, evt: gr.SelectData) -> dict:
        """A suggested prompt goes into the message box."""
        value = evt.value if isinstance(evt.value, dict) else {}
        text = value.get("text") if isinstance(value.get("text"), str) else ""
        return {self.tab.msg: gr.update(value={"text": text, "files": []}), self.tab.redo: None, self.tab.redo_chip: ""}

    # -- reusing settings ---------------------------------------------------------------------------------------
    def reuse_turn(self, owner: str, turn_id, tr: Tr) -> tuple[TurnSettings, str]:
        turn = self.ctx.store.get_turn(owner, turn_id) if isinstance(turn_id, str) else None
        if turn is None:
            raise gr.Error(tr("error.no_turn"))
        if turn.status == "running":
            raise gr.Error(STILL_RUNNING)
        stored = {**turn.settings, "seed": turn.outputs[0].seed if turn.outputs else None}
        return TurnSettings.from_stored(self.ctx.spec, stored), turn.prompt

    def reuse_png(self, file, tr: Tr) -> tuple[TurnSettings, str]:
        """Settings from an uploaded PNG made by this app or carrying an A1111 ``parameters`` chunk."""
        from PIL import Image

        path = getattr(file, "name", None) or (file if isinstance(file, str) else None)
        if not path:
            raise gr.Error(tr("error.choose_png"))
        try:
            with Image.open(path) as im:
                settings = read_settings(im)
        except Exception:
            raise gr.Error(tr("error.not_an_image")) from None
        if not settings:
            raise gr.Error(tr("error.no_settings"))
        return TurnSettings.from_stored(self.ctx.spec, settings), settings.get("prompt", "")

    def reused(self, settings: TurnSettings, prompt: str, tr: Tr) -> dict:
        """The panel and the message box refilled; a fixed seed holds for the next message only."""
        out = dict(zip(self.tab.panel.outputs, self.tab.panel.updates(settings), strict=True))
        out[self.tab.msg] = gr.update(value={"text": prompt, "files": []})
        out[self.tab.one_shot] = not settings.randomize
        out.update({self.tab.redo: None, self.tab.redo_chip: ""})
        gr.Info(tr("toast.reused"), duration=TOAST_S)
        return out


def _signature(conv_id, branch, active, rewrites=()) -> str:
    """What the drawn view depends on while jobs and rewrites run (a change redraws it): the open conversation's
    progress; of the others only which run (their spinners in the list), so their steps do not redraw this one."""
    parts = [str(conv_id), str(branch)]
    for s in active:
        p = s.progress
        shown = f":{s.position}:{p.phase if p else ''}:{p.step if p else 0}" if s.conversation_id == conv_id else ""
        parts.append(f"{s.id}:{s.conversation_id}:{s.state}{shown}")
    parts.extend(f"{r.id}:{r.conversation_id}:{len(r.text) if r.conversation_id == conv_id else ''}" for r in rewrites)
    return "|".join(parts)
