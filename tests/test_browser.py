"""A real browser (Debian's Chromium driven by Playwright) uses the app as a person would, at 1440x900 and on a
390x844 phone, in English and Chinese: one test per point of the chat's design (issue 12), and the screenshots
artifacts/chat-empty.png, chat-three-turns.png, chat-phone.png and chat-chinese.png on every run.

One app process serves every browser module (tests/conftest.py: tiny model, a little slow motion per step so that
jobs can be watched); the desktop page is shared by the tests in order. Waits are generous (the machine is shared);
nothing sleeps as an assertion.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path

import pytest
from appserver import AppProcess
from PIL import Image

from conversations.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("QIC_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
DESK = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
LONG = 90_000  # ms: the machine is shared with other work


@pytest.fixture(scope="module")
def app(browser_app):
    return browser_app  # one app process for every browser test module (tests/conftest.py)


@pytest.fixture(scope="module")
def browser(chromium):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return chromium


def open_page(browser, app, viewport=DESK, locale="en-US"):
    context = browser.new_context(viewport=viewport, locale=locale, accept_downloads=True)
    context.set_default_timeout(LONG)
    page = context.new_page()
    page.goto(app.url, wait_until="domcontentloaded")
    page.locator("#qic-msg textarea").wait_for()
    page.locator("#qic-status .qic-status").wait_for()
    page.locator("#qic-chip .qic-chip").wait_for()  # the page load's own event has drawn the view
    return page


@pytest.fixture(scope="module")
def desk(browser, app):
    page = open_page(browser, app)
    yield page
    page.context.close()


# -- helpers -----------------------------------------------------------------------------------------------------------


def box(page):
    return page.locator("#qic-msg textarea")


def send(page, text: str) -> None:
    box(page).fill(text)
    box(page).press("Enter")


def results(page):
    return page.locator("#qic-chat .qic-result:not(.qic-pending) img.qic-image")


def wait_results(page, n: int) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('#qic-chat .qic-result:not(.qic-pending) img.qic-image').length === {n}"
        " && document.querySelectorAll('#qic-chat .qic-pending').length === 0",
        timeout=LONG,
    )


def new_chat(page) -> None:
    page.locator("#qic-new").click()
    page.wait_for_function("() => document.querySelectorAll('#qic-chat .qic-result').length === 0")


def set_steps(page, n: int) -> None:
    """Steps under "Advanced" (opened, set, closed again)."""
    advanced = page.locator("#qic-chatcol .qic-advanced").first
    steps = page.locator("#qic-chatcol .qic-steps input[type=number]")
    if not steps.is_visible():
        advanced.locator(".label-wrap").click()
    kept = page.evaluate("() => localStorage.getItem('qwen-image-chat-settings')")
    if steps.input_value() != str(n):
        steps.fill(str(n))
        steps.press("Enter")
        page.wait_for_function("(kept) => localStorage.getItem('qwen-image-chat-settings') !== kept", arg=kept)
    advanced.locator(".label-wrap").click()
    steps.wait_for(state="hidden")


def toast(page, text: str) -> None:
    page.locator("[data-testid='toast-body']", has_text=text).first.wait_for()


def no_error_panels(page) -> None:
    """No Gradio error panel over the conversation, the composer or the sidebar (mistakes are toasts)."""
    panels = page.locator("#qic-chatcol .error, #qic-sidebar .error, #qic-chat [data-testid='status-tracker'].error")
    assert panels.count() == 0 or not any(panels.nth(i).is_visible() for i in range(panels.count()))


def inside(page, locator, viewport) -> bool:
    b = locator.bounding_box()
    return b is not None and b["y"] >= 0 and b["y"] + b["height"] <= viewport["height"] + 0.5


def conversation(app, first_prompt: str):
    """The stored conversation (any owner) whose first turn has this prompt."""
    store = Store(app.data_dir)
    try:
        row = store._conn.execute(
            "SELECT c.owner_id, c.id FROM conversations c JOIN turns t ON t.conversation_id = c.id "
            "WHERE t.version_of IS NULL AND t.prompt = ? ORDER BY t.created_at LIMIT 1",
            (first_prompt,),
        ).fetchone()
        return store.get_conversation(row[0], row[1]) if row else None
    finally:
        store.close()


def pngs(tmp_path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"upload-{i}.png"
        Image.new("RGB", (48, 40), (20 * i, 90, 200 - 15 * i)).save(path)
        paths.append(str(path))
    return paths


# -- 1. mistakes are toasts -------------------------------------------------------------------------------------------


def test_empty_page_and_mistakes_are_toasts(desk, app, tmp_path):
    page = desk
    # the empty chat: suggested prompts, the composer focused, sending disabled while the box is empty
    page.locator("#qic-chat .examples, #qic-chat button.example").first.wait_for()
    assert page.evaluate("() => document.activeElement === document.querySelector('#qic-msg textarea')")
    send_button = page.locator("#qic-msg button.submit-button")
    page.wait_for_function("() => document.querySelector('#qic-msg button.submit-button').disabled")
    box(page).press("Enter")  # nothing happens
    page.screenshot(path=str(ARTIFACTS / "chat-empty.png"))
    box(page).fill("a red fox")
    assert send_button.is_enabled()
    box(page).fill("   ")
    page.wait_for_function("() => document.querySelector('#qic-msg button.submit-button').disabled")

    # one attachment too many: a toast; the text and the attachments stay, no error panel anywhere
    send(page, "a red fox")
    wait_results(page, 1)
    most = 10
    page.locator("#qic-msg input[type=file]").set_input_files(pngs(tmp_path, most + 1))
    page.wait_for_function(f"() => document.querySelectorAll('#qic-msg .thumbnail-item').length === {most + 1}")
    send(page, "put them together")
    toast(page, f"At most {most}")
    assert box(page).input_value() == "put them together"
    assert page.locator("#qic-msg .thumbnail-item").count() == most + 1
    assert results(page).count() == 1
    no_error_panels(page)
    for _ in range(most + 1):  # clear the attachments again
        page.locator("#qic-msg .thumbnail-item .delete-button").first.click()
    page.wait_for_function("() => document.querySelectorAll('#qic-msg .thumbnail-item').length === 0")

    # a second message while this conversation's image is being made: refused with a toast, the text kept
    set_steps(page, 12)
    send(page, "make it slow")
    page.locator("#qic-chat .qic-pending").wait_for()
    send(page, "and another")
    toast(page, "still being made")
    assert box(page).input_value() == "and another"
    no_error_panels(page)
    page.locator("#qic-chat .qic-pending button.qic-stop").click()
    page.locator("#qic-chat .qic-result.qic-ended", has_text="Stopped").wait_for()
    set_steps(page, 4)
    box(page).fill("")


# -- 2. act on the image you see -------------------------------------------------------------------------------------


def test_each_result_has_its_actions_versions_and_chip(desk, app, tmp_path):
    page = desk
    new_chat(page)
    send(page, "a lighthouse on a cliff")
    wait_results(page, 1)
    send(page, "at night")
    wait_results(page, 2)
    last = page.locator("#qic-chat .qic-result").last
    names = ["edit", "regenerate", "reuse", "to_edit"]
    for name in names:  # every action on the newest result is on the first screen
        assert inside(page, last.locator(f"button.qic-act[name={name}]"), DESK), name
    assert inside(page, last.locator("a.qic-dl"), DESK)

    # keyboard: Tab moves from Edit to Regenerate; Enter regenerates in place (a version switcher, no new turn)
    last.locator("button.qic-act[name=edit]").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.name") == "regenerate"
    page.keyboard.press("Enter")
    page.locator("#qic-chat .qic-result").last.locator(".qic-vcount", has_text="2/2").wait_for()
    wait_results(page, 2)
    assert page.locator("#qic-chat .qic-user").count() == 2
    conv = conversation(app, "a lighthouse on a cliff")
    second = conv.turns[1]
    assert (second.version, second.versions) == (2, 2)
    # the previous version is one click away, and what the next message edits follows it
    page.locator("#qic-chat .qic-result").last.locator("button.qic-ver").first.click()
    page.locator("#qic-chat .qic-result").last.locator(".qic-vcount", has_text="1/2").wait_for()
    page.locator("#qic-chip", has_text="#2").wait_for()
    page.locator("#qic-chat .qic-result").last.locator("button.qic-ver").last.click()
    page.locator("#qic-chat .qic-result").last.locator(".qic-vcount", has_text="2/2").wait_for()

    # "Edit" on the first image: a removable chip with its thumbnail, the placeholder says which image
    page.locator("#qic-chat .qic-result").first.locator("button.qic-act[name=edit]").click()
    chip = page.locator("#qic-chip .qic-chip-branch")
    chip.wait_for()
    assert chip.locator("img.qic-thumb").count() == 1 and "#1" in chip.inner_text()
    assert "#1" in box(page).get_attribute("placeholder")
    shot = ARTIFACTS / "chat-three-turns.png"
    send(page, "add a red roof")
    wait_results(page, 3)
    page.locator("#qic-chat .qic-user .qic-branch", has_text="#1").wait_for()  # the transcript shows the branch
    # the chip again, for the screenshot of three turns with a version and a branch chip (a tall window shows all)
    page.locator("#qic-chat .qic-result").first.locator("button.qic-act[name=edit]").click()
    chip.wait_for()
    page.set_viewport_size({"width": DESK["width"], "height": 1900})
    page.locator("#qic-chat .qic-user").first.wait_for()
    page.wait_for_function("() => document.querySelector('#qic-chat .qic-user').getBoundingClientRect().top > 0")
    page.screenshot(path=str(shot))
    page.set_viewport_size(DESK)
    conv = conversation(app, "a lighthouse on a cliff")
    assert conv.turns[2].inputs[0].id == conv.turns[0].outputs[0].id
    page.locator("#qic-chip button.qic-unchip").click()
    page.locator("#qic-chip .qic-chip-latest", has_text="#3").wait_for()

    # attachments replace the implicit image: the chip says so, and only they are sent
    page.locator("#qic-msg input[type=file]").set_input_files(pngs(tmp_path, 2))
    page.wait_for_function("() => document.querySelectorAll('#qic-msg .thumbnail-item').length === 2")
    assert page.locator("#qic-chip .qic-chip-attach").is_visible()
    send(page, "blend <image1> and <image2>")
    wait_results(page, 4)
    conv = conversation(app, "a lighthouse on a cliff")
    assert [i.role for i in conv.turns[3].inputs] == ["input", "input"]

    # reuse settings: the prompt comes back, and the seed holds for one message only
    page.locator("#qic-chat .qic-result").first.locator("button.qic-act[name=reuse]").click()
    page.wait_for_function("() => document.querySelector('#qic-msg textarea').value === 'a lighthouse on a cliff'")
    toast(page, "next message only")
    box(page).press("Enter")
    wait_results(page, 5)
    conv = conversation(app, "a lighthouse on a cliff")
    assert conv.turns[4].outputs[0].seed == conv.turns[0].outputs[0].seed
    send(page, "one more")
    wait_results(page, 6)
    conv = conversation(app, "a lighthouse on a cliff")
    assert conv.turns[5].outputs[0].seed != conv.turns[0].outputs[0].seed
    no_error_panels(page)


# -- 3. one progress, where the image will be ---------------------------------------------------------------------


def test_one_progress_in_the_pending_bubble_with_a_live_preview(desk, app):
    page = desk
    new_chat(page)
    set_steps(page, 16)
    send(page, "a slow sunrise")
    pending = page.locator("#qic-chat .qic-pending")
    pending.locator(".qic-ptext", has_text="Step").wait_for()
    pending.locator("img.qic-live").wait_for()  # the live preview of the latents
    assert pending.locator("progress").count() == 1 and pending.locator("button.qic-stop").count() == 1
    assert "preview" in pending.locator("img.qic-live").get_attribute("alt").lower()
    # no other progress on the page: no Gradio progress bars or timers. Gradio renders a pending event's timer even
    # with show_progress="hidden", in a status tracker made transparent by the class "hide" (which Playwright's
    # :visible still counts), so what counts is a bar outside such a tracker.
    shown = page.evaluate(
        """() => [...document.querySelectorAll('.progress-bar, .eta-bar, .progress-text, .meta-text-center')]
            .filter(e => e.offsetParent !== null && !e.closest('[data-testid=status-tracker].hide')).length"""
    )
    assert shown == 0
    wait_results(page, 1)
    set_steps(page, 4)


# -- 4. move freely -----------------------------------------------------------------------------------------------


def test_leaving_a_running_job_never_pulls_the_view_back(desk, app):
    page = desk
    new_chat(page)
    set_steps(page, 14)
    send(page, "a distant castle")
    page.locator("#qic-chat .qic-pending .qic-ptext", has_text="Step").wait_for()
    new_chat(page)
    running = page.locator("#qic-convs li.qic-conv", has_text="a distant castle")
    running.locator(".qic-spin").wait_for()  # its sidebar entry shows it is being made
    assert page.locator("#qic-convs li.qic-here").count() == 0  # nothing open: a new chat
    # the job finishes while we look elsewhere: the view stays on the new chat
    running.locator(".qic-spin").wait_for(state="detached")
    assert page.locator("#qic-chat .qic-result").count() == 0
    # coming back shows its result
    running.locator("button.qic-open").click()
    wait_results(page, 1)
    assert page.locator("#qic-convs li.qic-here", has_text="a distant castle").count() == 1
    set_steps(page, 4)


def test_a_reload_during_a_job_shows_its_progress_then_its_result(desk, app):
    """The job belongs to the server: the page that comes back follows it again."""
    page = desk
    new_chat(page)
    set_steps(page, 14)
    send(page, "a lighthouse in a storm")
    page.locator("#qic-chat .qic-pending .qic-ptext", has_text="Step").wait_for()
    page.reload(wait_until="domcontentloaded")
    page.locator("#qic-chat .qic-pending .qic-ptext", has_text="Step").wait_for()  # the running job, again
    wait_results(page, 1)
    assert page.locator("#qic-convs li.qic-here", has_text="a lighthouse in a storm").count() == 1
    set_steps(page, 4)


def test_a_page_whose_session_the_server_let_go_carries_on(browser, tmp_path):
    """With room for one Gradio session (--max-sessions 1), another page's session evicts this one's state; its next
    message still edits its own conversation (ui/sessions.py)."""
    proc = AppProcess(tmp_path / "data", args=["--max-sessions", "1"]).start()
    try:
        page = open_page(browser, proc)
        send(page, "a lighthouse at dusk")
        wait_results(page, 1)
        other = open_page(browser, proc)  # a newer session: the first page's is let go
        send(page, "make it stormy")
        wait_results(page, 2)
        assert page.locator("#qic-convs .qic-conv").count() == 1
        assert other.locator("#qic-convs .qic-conv").count() == 0  # and the other page is someone else
        other.context.close()
        page.context.close()
    finally:
        proc.stop()


# -- 5. the page people know ----------------------------------------------------------------------------------------


def test_sidebar_by_date_search_menu_pages_and_settings_kept(desk, app):
    page = desk
    long_title = "A watercolor map of an imaginary island with a lighthouse"  # 57 characters, shown whole
    new_chat(page)
    send(page, long_title)
    wait_results(page, 1)
    here = page.locator("#qic-convs li.qic-here")
    assert here.count() == 1 and long_title in here.locator(".qic-ctitle").inner_text()
    assert page.locator("#qic-convs h3.qic-group", has_text="Today").count() == 1
    # search as you type, and a line when nothing matches
    search = page.locator("#qic-search textarea, #qic-search input").first
    everything = page.locator("#qic-convs li.qic-conv").count()
    search.press_sequentially("waterco")
    page.wait_for_function("() => document.querySelectorAll('#qic-convs li.qic-conv').length === 1")
    search.press("Control+a")
    search.press("Backspace")
    search.press_sequentially("zzzz")
    page.locator("#qic-convs .qic-none", has_text="No conversations match").wait_for()
    search.press("Control+a")
    search.press("Backspace")
    page.wait_for_function(f"() => document.querySelectorAll('#qic-convs li.qic-conv').length === {everything}")
    # the item's menu: rename
    page.once("dialog", lambda d: d.accept("Island map"))
    here.locator("summary").click()
    here.locator("button[name=rename]").click()
    page.locator("#qic-convs li.qic-here .qic-ctitle", has_text="Island map").wait_for()
    # export
    page.locator("#qic-convs li.qic-here summary").click()
    page.locator("#qic-convs li.qic-here button[name=export]").click()
    page.locator("#qic-export a, #qic-export .file-preview").first.wait_for()
    # older conversations are reachable: more than a page of them
    owner = conversation(app, long_title).owner_id
    store = Store(app.data_dir)
    try:
        for n in range(52):
            store.create_conversation(owner, f"old conversation {n}")
    finally:
        store.close()
    page.locator("#qic-new").click()
    page.locator("#qic-convs button.qic-more").wait_for()
    before = page.locator("#qic-convs li.qic-conv").count()
    page.locator("#qic-convs button.qic-more").click()
    page.wait_for_function(f"() => document.querySelectorAll('#qic-convs li.qic-conv').length > {before}")
    # delete (after a confirmation)
    target = page.locator("#qic-convs li.qic-conv", has_text="old conversation 0")
    page.once("dialog", lambda d: d.accept())
    target.locator("summary").click()
    target.locator("button[name=delete]").click()
    target.wait_for(state="detached")

    # the composer: the shape as a chip beside it, the rest under a closed "Advanced"; a one-line status
    composer = page.locator("#qic-composer").bounding_box()
    ratio = page.locator("#qic-options .qic-ratio").bounding_box()
    assert composer["y"] <= ratio["y"] <= composer["y"] + composer["height"]
    assert page.locator("#qic-status .qic-status").bounding_box()["height"] < 40
    # settings persist per browser ("Advanced" starts closed)
    set_steps(page, 7)
    page.reload(wait_until="domcontentloaded")
    page.locator("#qic-chip .qic-chip").wait_for()
    assert not page.locator("#qic-chatcol .qic-steps input[type=number]").is_visible()
    page.locator("#qic-chatcol .qic-advanced .label-wrap").first.click()
    page.wait_for_function("() => document.querySelector('#qic-chatcol .qic-steps input[type=number]').value === '7'")
    page.locator("#qic-chatcol .qic-advanced .label-wrap").first.click()
    set_steps(page, 4)


# -- 6. phones ------------------------------------------------------------------------------------------------------


def test_phone_layout(browser, app):
    page = open_page(browser, app, PHONE)
    try:
        assert page.locator(".sidebar.open").count() == 0  # the list is a drawer, closed
        composer = page.locator("#qic-msg")
        assert inside(page, composer, PHONE)
        send(page, "a tiny house in a forest")
        wait_results(page, 1)
        send(page, "in winter")
        wait_results(page, 2)
        newest = results(page).last
        page.wait_for_function(
            "() => { const r = [...document.querySelectorAll('#qic-chat img.qic-image')].pop().getBoundingClientRect();"
            " return r.bottom <= innerHeight && r.top >= 0; }"
        )
        assert inside(page, newest, PHONE) and inside(page, composer, PHONE)
        # one scroll area: the page itself does not scroll
        assert page.evaluate("() => document.scrollingElement.scrollHeight <= innerHeight + 1")
        page.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
        # the history is one tap away
        page.locator(".sidebar .toggle-button").click()
        page.locator("#qic-convs li.qic-conv", has_text="a tiny house").wait_for()
    finally:
        page.context.close()


# -- 7. Generate and Edit tabs ----------------------------------------------------------------------------------------


def test_generate_and_edit_tabs(desk, app):
    page = desk
    page.locator("button[role=tab]", has_text="Generate").click()
    page.locator("#qic-gen-prompt textarea").fill("a wide valley")
    ratio = page.locator("#qic-tab-generate .qic-ratio input")
    ratio.click()
    page.locator("ul[role=listbox] li", has_text="16:9").first.click()
    page.locator("#qic-gen-run").click()
    page.locator("#qic-gen-results img").first.wait_for()
    shown = page.locator("#qic-gen-results img").first
    page.screenshot(path=str(ARTIFACTS / "generate-tab.png"))
    assert inside(page, shown, DESK), shown.bounding_box()  # the result at the top of the view
    assert page.evaluate("(el) => getComputedStyle(el).objectFit", shown.element_handle()) == "contain"
    # the one control for the shape has a custom size; there is no second one
    custom = page.locator("#qic-tab-generate").get_by_role("checkbox", name=re.compile("custom", re.I))
    assert custom.filter(visible=True).count() == 0
    page.locator("#qic-tab-generate button", has_text="Send the selected result").click()
    toast(page, "<image1>")
    page.locator("button[role=tab][aria-selected=true]", has_text="Edit").wait_for()
    page.locator("#qic-refs", has_text="<image1>").wait_for()  # numbered as the prompt names it
    page.locator("#qic-edit-instruction textarea").fill("make <image1> golden")
    page.locator("#qic-edit-run").click()
    page.locator("#qic-edit-results img").first.wait_for()
    assert inside(page, page.locator("#qic-edit-results img").first, DESK)
    page.locator("#qic-compare img").first.wait_for()
    page.locator("button[role=tab]", has_text="Chat").click()


# -- 8. downloads and sharing ------------------------------------------------------------------------------------------


def test_downloads_have_meaningful_names_and_no_server_paths(desk, app):
    page = desk
    new_chat(page)
    send(page, "A red fox, in the snow!")
    wait_results(page, 1)
    with page.expect_download() as info:
        page.locator("#qic-chat a.qic-dl").last.click()
    download = info.value
    seed = conversation(app, "A red fox, in the snow!").turns[0].outputs[0].seed
    assert download.suggested_filename == f"a-red-fox-in-the-snow-{seed}.png"
    assert Path(download.path()).read_bytes().startswith(b"\x89PNG")
    text = page.evaluate("() => document.body.innerText")
    assert str(app.data_dir) not in text and "/tmp/" not in text
    assert page.locator("button[aria-label*='Share'], button[title*='Share']").count() == 0
    assert page.locator("#qic-sidebar button[aria-label*='Download'], #qic-sidebar a[download]").count() == 0


# -- 9. Chinese --------------------------------------------------------------------------------------------------------


def test_chinese_browser_gets_a_chinese_page(browser, app):
    page = open_page(browser, app, DESK, locale="zh-CN")
    try:
        page.locator("button[role=tab]", has_text="对话").wait_for()
        assert "描述" in box(page).get_attribute("placeholder")
        assert "新对话" in page.locator("#qic-new").inner_text()
        send(page, "一只在雪地里的红狐狸")
        wait_results(page, 1)
        bar = page.locator("#qic-chat .qic-result").last
        assert bar.locator("button[name=edit]").inner_text().strip().endswith("编辑")
        assert bar.locator("button[name=regenerate]").inner_text().strip().endswith("重新生成")
        assert results(page).last.get_attribute("alt") == "一只在雪地里的红狐狸"
        page.locator("#qic-convs h3.qic-group", has_text="今天").wait_for()
        page.screenshot(path=str(ARTIFACTS / "chat-chinese.png"))
        # a mistake found below the UI (the model's token limit, English for the API) is a Chinese toast
        long_prompt = "一只在雪地里的红狐狸，" * 400
        send(page, long_prompt)
        toast(page, "上限为 1000 个")
        assert box(page).input_value() == long_prompt and results(page).count() == 1
        no_error_panels(page)
    finally:
        page.context.close()


# -- 10. accessibility -----------------------------------------------------------------------------------------------


def test_alt_text_focus_and_axe(desk, app):
    page = desk
    new_chat(page)
    send(page, "a green parrot on a branch")
    wait_results(page, 1)
    assert results(page).last.get_attribute("alt") == "a green parrot on a branch"
    page.locator("#qic-chat .qic-result").last.locator("button.qic-act[name=edit]").click()
    page.locator("#qic-chip .qic-chip-branch").wait_for()
    axe = importlib.resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
    page.evaluate(axe)
    # Gradio's own toasts are left out: a toast still shown from a job's end has a clickable header holding its close
    # button (axe: nested-interactive), which is Gradio's markup, not ours
    found = page.evaluate(
        "async () => (await axe.run({exclude: [['.toast-wrap']]}, {resultTypes: ['violations']})).violations"
        ".filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))"
    )
    assert found == []
    # every image on the page has a text alternative (decorative ones an empty one)
    assert page.evaluate("() => [...document.querySelectorAll('img')].every(i => i.hasAttribute('alt'))")
