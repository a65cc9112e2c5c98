"""The Gradio Blocks app: Chat (main), Generate and Edit tabs. Thin: every handler lives in a handlers module."""

from __future__ import annotations

import gradio as gr

from . import render
from .chat_handlers import ChatHandlers
from .context import AppContext
from .settings import build_panel, panel_updates
from .sidebar import SidebarHandlers, sidebar_view
from .studio import EXAMPLES, MARK_COLOR, StudioHandlers

GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}
PRIVATE = {"api_visibility": "private"}

CSS = """
#qic-chat .message img { max-height: 420px; object-fit: contain; }
#qic-sidebar .caption-label { font-size: 0.8em; }
#qic-banner.demo { border-left: 4px solid #e8a33d; padding-left: 10px; }
@media (max-width: 768px) {  /* phones: the conversation first, then the list of conversations, then settings */
  #qic-chat { order: -1; }
  #qic-convs { height: 240px !important; }
}
"""


def banner_text(ctx: AppContext) -> str:
    st = ctx.engine.status
    icon = {"ready": "🟢", "loading": "🟡", "error": "🔴", "idle": "⚪"}.get(st.state, "⚪")
    line = f"{icon} **{render.escape_md(st.model_label)}** — {render.escape_md(st.message)}"
    if st.demo:
        line = (
            "⚠️ **Demo model.** No GPU (or no model weights) here, so this is the tiny built-in model with random "
            "weights: it works end to end, but its images are noise. On a CUDA GPU, `python app.py` runs "
            "Qwen-Image-2.1 (weights download on first start); `python app.py --model qwen-image` runs the 20B "
            "pair.\n\n" + line
        )
    return line


def _selected_index(evt: gr.SelectData):
    return evt.index


def build_app(ctx: AppContext) -> gr.Blocks:
    spec = ctx.spec
    chat = ChatHandlers(ctx)
    side = SidebarHandlers(ctx, chat)
    studio = StudioHandlers(ctx)

    with gr.Blocks(title="Qwen Image Chat") as demo:
        token = gr.BrowserState(None, storage_key="qwen-image-chat-owner", secret=ctx.extra.get("browser_secret"))
        owner, conv, turn_map = gr.State(None), gr.State(None), gr.State([])
        selected, branch, side_ids = gr.State(None), gr.State(None), gr.State([])
        banner = gr.Markdown(banner_text(ctx), elem_id="qic-banner", elem_classes=["demo"] if spec.tiny else [])
        timer = gr.Timer(2.0)

        with gr.Tabs():
            with gr.Tab("Chat", id="chat"), gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=220, elem_id="qic-sidebar"):
                    new_btn = gr.Button("+ New chat", variant="primary")
                    search = gr.Textbox(placeholder="Search prompts…", show_label=False, max_length=200)
                    gallery = gr.Gallery(
                        label="Conversations",
                        elem_id="qic-convs",
                        columns=2,
                        height=420,
                        allow_preview=False,
                        show_label=True,
                        object_fit="cover",
                    )
                    with gr.Accordion("Manage", open=False):
                        rename_box = gr.Textbox(label="New title", max_length=200)
                        rename_btn = gr.Button("Rename", size="sm")
                        delete_btn = gr.Button("Delete conversation", size="sm", variant="stop")
                        confirm_btn = gr.Button(
                            "Really delete it and its images", size="sm", variant="stop", visible=False
                        )
                        export_btn = gr.Button("Export as .zip", size="sm")
                        export_file = gr.File(label="Export", interactive=False)
                        import_btn = gr.UploadButton("Import .zip", file_types=[".zip"], size="sm")
                with gr.Column(scale=4, elem_id="qic-chat"):
                    chatbot = gr.Chatbot(
                        label="Conversation",
                        height=560,
                        group_consecutive_messages=False,
                        placeholder="Describe an image. Then say how to change it.",
                        feedback_options=None,
                        buttons=["copy"],
                    )
                    msg = gr.MultimodalTextbox(
                        placeholder="Describe an image, or how to change the latest one (attach up to 10 images)",
                        file_count="multiple",
                        file_types=["image"],
                        show_label=False,
                        sources=["upload"],
                        max_plain_text_length=20000,
                        submit_btn=True,
                        stop_btn=False,
                    )
                    with gr.Row():
                        status = gr.Markdown("")
                        stop_btn = gr.Button("⏹ Stop", size="sm", variant="stop", scale=0)
                    selected_md = gr.Markdown(render.selected_line(None, None, None))
                    with gr.Row():
                        regen_btn = gr.Button("↻ Regenerate", size="sm")
                        use_btn = gr.Button("↳ Edit this image next", size="sm")
                        clear_branch_btn = gr.Button("Edit the latest instead", size="sm")
                        reuse_btn = gr.Button("Reuse settings", size="sm")
                        undo_btn = gr.Button("↶ Undo last turn", size="sm")
                        to_edit_btn = gr.Button("Send to Edit tab", size="sm")
                    download = gr.File(label="Full-resolution PNG (with settings)", interactive=False)
                    with gr.Row(visible=False):
                        turn_no = gr.Number(label="turn", precision=0)
                        select_api = gr.Button("select")
                        conv_box = gr.Textbox(label="conversation id")
                        open_api = gr.Button("open")
                with gr.Column(scale=1, min_width=260), gr.Accordion("Settings", open=True):
                    panel = build_panel(spec)
                    reuse_png = gr.UploadButton("Reuse settings from a PNG", file_types=[".png"], size="sm")

            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        g_prompt = gr.Textbox(label="Prompt", lines=3, max_length=20000)
                        g_btn = gr.Button("Generate", variant="primary")
                        g_stop = gr.Button("⏹ Stop", size="sm", variant="stop")
                        g_info = gr.Markdown("")
                        gr.Examples(EXAMPLES, inputs=g_prompt, label="Examples")
                    with gr.Column(scale=1):
                        g_panel = build_panel(spec, with_auto=False)
                        g_custom = gr.Checkbox(False, label="Custom size")
                        with gr.Row():
                            g_w = gr.Number(1024 if not spec.tiny else 64, label="Width", precision=0)
                            g_h = gr.Number(1024 if not spec.tiny else 64, label="Height", precision=0)
                g_gallery = gr.Gallery(
                    label="Results", columns=2, height=520, format="png", buttons=["download", "fullscreen"]
                )
                g_pick = gr.State(0)
                g_to_edit = gr.Button("Send the selected result to the Edit tab", size="sm")

            with gr.Tab("Edit", id="edit"):
                with gr.Row():
                    with gr.Column(scale=2):
                        refs = gr.Gallery(
                            label=f"Reference images (1-{spec.max_references}; name them <image1>…)",
                            type="filepath",
                            interactive=True,
                            columns=5,
                            height=200,
                            sources=["upload", "clipboard"],
                            format="png",
                        )
                        e_prompt = gr.Textbox(
                            label="Instruction",
                            lines=2,
                            max_length=20000,
                            placeholder="e.g. put the hat from <image2> on the cat in <image1>",
                        )
                        marks = gr.ImageEditor(
                            label="Local edit: paint or circle what to change on reference 1",
                            type="pil",
                            brush=gr.Brush(colors=[MARK_COLOR], color_mode="fixed"),
                            eraser=gr.Eraser(),
                            sources=[],
                            layers=False,
                            height=360,
                        )
                        e_btn = gr.Button("Edit", variant="primary")
                        e_stop = gr.Button("⏹ Stop", size="sm", variant="stop")
                        e_info = gr.Markdown("")
                    with gr.Column(scale=1):
                        e_match = gr.Number(
                            1,
                            label="Output shape follows reference #",
                            precision=0,
                            minimum=1,
                            maximum=spec.max_references,
                        )
                        e_ratio = gr.Dropdown(
                            [("Follow the reference above", "match")] + [(r, r) for r in spec.ratios],
                            value="match",
                            label="Aspect ratio",
                        )
                        e_panel = build_panel(spec, with_auto=False, show_ratio=False)
                with gr.Row():
                    e_gallery = gr.Gallery(
                        label="Results", columns=2, height=520, format="png", buttons=["download", "fullscreen"]
                    )
                    e_compare = gr.ImageSlider(
                        label="Before / after (reference 1 and the first result)",
                        type="pil",
                        format="png",
                        image_mode=None,
                        interactive=False,
                        max_height=520,
                    )

        view_out = [chatbot, turn_map, conv, selected, branch, selected_md, download]
        chat_out = [*view_out, msg, owner, status]
        side_out = [gallery, side_ids]

        def refresh_sidebar(own):
            return sidebar_view(ctx, own) if own else (gr.skip(), gr.skip())

        refresh = {"fn": refresh_sidebar, "inputs": [owner], "outputs": side_out, **PRIVATE}

        def on_load(tok, request: gr.Request):
            own, new_tok = ctx.restore(tok, request)
            recent = ctx.store.list_conversations(own, limit=1)
            view = chat.view(own, recent[0].id if recent else None, None, None)
            return (new_tok if new_tok else gr.skip()), own, *view, *sidebar_view(ctx, own)

        demo.load(on_load, [token], [token, owner, *view_out, *side_out], **PRIVATE).then(
            chat.resume, [owner, conv], chat_out, **PRIVATE
        )

        def tick():
            settled = ctx.engine.status.state in ("ready", "error")
            return banner_text(ctx), gr.Timer(active=not settled)

        timer.tick(tick, None, [banner, timer], **PRIVATE, queue=False, show_progress="hidden")

        # GPU events return their own results; the sidebar is refreshed by a chained private event
        msg.submit(chat.send, [msg, owner, conv, branch, *panel], chat_out, api_name="chat", **GPU).then(**refresh)
        regen_btn.click(chat.regenerate, [owner, conv, selected], chat_out, api_name="regenerate", **GPU).then(
            **refresh
        )
        # the chat's own retry/undo icons (private: the API has /regenerate and /undo)
        retry = {"api_name": "retry_icon", **GPU, **PRIVATE}
        chatbot.retry(chat.retry, [owner, conv, turn_map], chat_out, **retry).then(**refresh)
        chatbot.undo(chat.undo, [owner, conv], view_out, api_name="undo_icon", **PRIVATE).then(**refresh)
        stop_btn.click(chat.stop, [owner, conv], status, api_name="stop")
        chatbot.select(chat.select_message, [owner, conv, turn_map, branch], view_out, **PRIVATE)
        select_api.click(chat.select_turn, [turn_no, owner, conv, branch], view_out, api_name="select_turn")
        use_btn.click(chat.use_as_input, [owner, conv, selected], view_out, api_name="use_as_input")
        clear_branch_btn.click(chat.clear_branch, [owner, conv, selected], view_out, api_name="edit_latest")
        undo_btn.click(chat.undo, [owner, conv], view_out, api_name="undo").then(**refresh)
        new_btn.click(chat.new_chat, [owner], [*view_out, owner], api_name="new_chat")
        open_api.click(chat.open_conversation, [conv_box, owner], [*view_out, owner], api_name="open_conversation")
        gallery.select(side.open_selected, [side_ids, owner], [*view_out, owner], **PRIVATE)
        search.submit(side.search, [search, owner], [*side_out, owner], api_name="search_conversations")
        rename_btn.click(
            side.rename, [rename_box, owner, conv], [*side_out, rename_box], api_name="rename_conversation"
        )
        delete_btn.click(lambda: gr.update(visible=True), None, confirm_btn, **PRIVATE, queue=False)
        confirm_btn.click(side.delete, [owner, conv], [*view_out, *side_out], api_name="delete_conversation").then(
            lambda: gr.update(visible=False), None, confirm_btn, **PRIVATE, queue=False
        )
        export_btn.click(side.export, [owner, conv], export_file, api_name="export_conversation")
        import_btn.upload(
            side.import_zip, [import_btn, owner], [*view_out, *side_out, owner], api_name="import_conversation"
        )

        def reuse_turn(own_state, conv_id, sel, request: gr.Request):
            own = ctx.owner(own_state, request)
            turn = ctx.store.get_turn(own, sel) if sel else None
            if turn is None or turn.conversation_id != conv_id:
                raise gr.Error("Select a turn first.")
            return *panel_updates(spec, {**turn.settings, "seed": turn.outputs[0].seed if turn.outputs else None}), {
                "text": turn.prompt,
                "files": [],
            }

        def reuse_file(file, own_state, request: gr.Request):
            settings = side.reuse_from_png(file, own_state, request)
            return *panel_updates(spec, settings), {"text": settings.get("prompt", ""), "files": []}

        reuse_btn.click(reuse_turn, [owner, conv, selected], [*panel, msg], api_name="reuse_settings")
        reuse_png.upload(reuse_file, [reuse_png, owner], [*panel, msg], api_name="reuse_settings_from_png")
        to_edit_btn.click(studio.add_reference, [refs, owner, selected], refs, api_name="send_to_edit")

        g_ratio, g_tier, g_steps, g_cfg, g_neg, g_seed, g_rand, g_num, g_transp = g_panel
        g_btn.click(
            studio.generate,
            [
                g_prompt,
                g_neg,
                g_ratio,
                g_tier,
                g_custom,
                g_w,
                g_h,
                g_steps,
                g_cfg,
                g_seed,
                g_rand,
                g_num,
                g_transp,
                owner,
            ],
            [g_gallery, g_info, owner],
            api_name="generate",
            **GPU,
        ).then(**refresh)
        g_stop.click(studio.stop, [owner], g_info, api_name="stop_generate")
        g_gallery.select(_selected_index, None, g_pick, **PRIVATE, queue=False)
        g_to_edit.click(studio.gallery_to_refs, [refs, g_gallery, g_pick], refs, **PRIVATE)
        _e_ratio, e_tier, e_steps, e_cfg, e_neg, e_seed, e_rand, e_num, e_transp = e_panel
        e_btn.click(
            studio.edit,
            [
                refs,
                e_prompt,
                marks,
                e_match,
                e_ratio,
                e_tier,
                e_steps,
                e_cfg,
                e_neg,
                e_seed,
                e_rand,
                e_num,
                e_transp,
                owner,
            ],
            [e_gallery, e_info, owner, e_compare],
            api_name="edit",
            **GPU,
        ).then(**refresh)
        e_stop.click(studio.stop, [owner], e_info, api_name="stop_edit")
        refs.change(studio.marks_background, refs, marks, **PRIVATE)
    return demo
