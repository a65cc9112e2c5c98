"""Two real processes: app B (tiny model, ``--openai-api --mcp``) and app A (``--backend`` B), both on the CPU.

A chat through A's API is made by B and stored by A with its settings; the official ``openai`` package against B
(generation, edit with two images, the UI's own messages for a bad image, too many references and too long a prompt,
401 for a missing or wrong key); an MCP client lists B's two tools and calls them.
"""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import openai
import pytest
from appserver import AppProcess, client
from PIL import Image

from conversations.store import Store
from serving.service import API_OWNER

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def b_app(tmp_path_factory):
    app = AppProcess(tmp_path_factory.mktemp("b") / "data", ["--openai-api", "--mcp", "--api-key", KEY]).start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def a_app(b_app, tmp_path_factory):
    args = ["--backend", f"{b_app.url}v1", "--backend-key", KEY]
    app = AppProcess(tmp_path_factory.mktemp("a") / "data", args).start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def sdk(b_app):
    return openai.OpenAI(base_url=f"{b_app.url}v1", api_key=KEY, max_retries=0)


def stored(app: AppProcess, owner: str | None = None):
    """Every conversation in an app's store (of ``owner``, or of anyone), oldest first."""
    store = Store(app.data_dir)
    try:
        owners = [owner] if owner else [r[0] for r in store._conn.execute("SELECT id FROM owners")]
        convs = [store.get_conversation(o, c.id) for o in owners for c in store.list_conversations(o, limit=1000)]
        return sorted(convs, key=lambda c: c.created_at)
    finally:
        store.close()


def stored_turns(app: AppProcess, conv) -> list:
    """Every turn of a stored conversation, every version included."""
    store = Store(app.data_dir)
    try:
        return store.all_turns(conv.owner_id, conv.id)
    finally:
        store.close()


def png(size=(64, 48), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def decoded(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def test_a_chat_through_a_remote_backend_is_made_by_b_and_stored_by_a(a_app, b_app):
    c = client(a_app)
    before_b = len(stored(b_app, API_OWNER))
    for text in ("a red fox in the snow", "make it blue", "add a hat"):
        out = c.predict({"text": text, "files": []}, api_name="/chat")
        assert out[2] is not None and "failed" not in out[1], out[1]
    [conv] = [conv for conv in stored(a_app) if conv.turns and conv.turns[0].prompt == "a red fox in the snow"]
    kinds = [t.kind for t in conv.turns]
    assert kinds == ["generate", "edit", "edit"] and all(t.status == "done" for t in conv.turns)
    for turn in conv.turns:
        [image] = turn.outputs
        assert turn.settings["steps"] == 4 and turn.settings["seed"] == image.seed and turn.settings["model"] == "tiny"
        with Image.open(image.path) as im:  # A's own PNG, with A's settings chunk
            assert f"Seed: {image.seed}" in im.info["parameters"] and turn.prompt in im.info["parameters"]
    assert conv.turns[1].inputs[0].id == conv.turns[0].outputs[0].id  # the edit took A's previous image
    made_by_b = stored(b_app, API_OWNER)[before_b:]  # B keeps its own copy, under the API owner
    prompts = [t.prompt for made in made_by_b for t in made.turns]
    assert prompts == ["a red fox in the snow", "make it blue", "add a hat"]
    assert made_by_b[2].turns[0].outputs[0].seed == conv.turns[2].outputs[0].seed


def test_regenerate_branch_and_the_generate_and_edit_tabs_work_through_a_remote_backend(a_app):
    from gradio_client import handle_file

    c = client(a_app)
    c.predict({"text": "a paper crane", "files": []}, api_name="/chat")
    c.predict({"text": "make it red", "files": []}, api_name="/chat")
    c.predict(1, api_name="/regenerate")  # a second version of turn 1, in its place
    c.predict(1, api_name="/use_as_input")  # the next message edits it (a branch)
    c.predict({"text": "fold it from blue paper", "files": []}, api_name="/chat")
    [conv] = [conv for conv in stored(a_app) if conv.turns[0].prompt == "a paper crane"]
    again, red, branch = conv.turns
    assert again.prompt == "a paper crane" and (again.version, again.versions) == (2, 2)
    first = next(t for t in stored_turns(a_app, conv) if t.id == again.version_ids[0])
    assert again.outputs[0].seed != first.outputs[0].seed
    assert red.inputs[0].id == first.outputs[0].id  # made before the regeneration, from the first version
    assert branch.inputs[0].id == again.outputs[0].id and all(t.status == "done" for t in conv.turns)

    gallery, info = c.predict("a lighthouse at night", num_images=2, api_name="/generate")[:2]
    assert len(gallery) == 2 and "seeds" in info
    refs = [{"image": handle_file(gallery[0]["image"]), "caption": None}]
    gallery, info = c.predict(refs, "make it day", None, api_name="/edit")[:2]
    assert len(gallery) == 1 and "seeds" in info


def test_openai_sdk_generates_with_our_fields(sdk, b_app):
    result = sdk.images.generate(
        prompt="a lighthouse at dusk", size="64x64", n=2, extra_body={"seed": 11, "num_inference_steps": 2}
    )
    assert len(result.data) == 2 and result.output_format == "png"
    seeds = []
    for item in result.data:
        with decoded(item) as im:
            assert im.size == (64, 64)
            seeds.append(im.info["parameters"].split("Seed: ")[1].split(",")[0])
    assert seeds == ["11", "12"]
    jpeg = sdk.images.generate(prompt="a lighthouse", output_format="jpeg", output_compression=80)
    assert decoded(jpeg.data[0]).format == "JPEG"


def test_openai_sdk_edits_with_two_images(sdk, b_app):
    result = sdk.images.edit(
        image=[("a.png", png(color="red"), "image/png"), ("b.png", png(color="blue"), "image/png")],
        prompt="put <image1> beside <image2>",
    )
    [item] = result.data
    assert "References: 2" in decoded(item).info["parameters"]
    turn = stored(b_app, API_OWNER)[-1].turns[-1]
    assert turn.prompt == "put <image1> beside <image2>" and len(turn.inputs) == 2


def test_openai_errors_carry_the_uis_messages(sdk, b_app):
    before = len(stored(b_app, API_OWNER))
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.images.edit(image=[("a.png", png(), "image/png"), ("b.png", b"GIF89a broken", "image/gif")], prompt="x")
    err = bad.value.body
    assert bad.value.status_code == 400 and err["param"] == "image" and err["code"] == "invalid_image"
    assert err["message"].startswith("image 2:")
    with pytest.raises(openai.BadRequestError, match="this model takes at most 10") as many:
        sdk.images.edit(image=[(f"{i}.png", png(), "image/png") for i in range(11)], prompt="combine them")
    assert many.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError, match="tokens long; the limit is 1000") as long:
        sdk.images.generate(prompt="word " * 1500)
    assert long.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError, match="Unknown parameter: 'flavour'"):
        sdk.images.generate(prompt="x", extra_body={"flavour": "vanilla"})
    assert len(stored(b_app, API_OWNER)) == before  # nothing is stored for a refused request


def test_a_missing_or_wrong_key_gets_401(b_app):
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=f"{b_app.url}v1", api_key="not-the-key", max_retries=0).images.generate(prompt="x")
    assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"
    missing = httpx.post(f"{b_app.url}v1/images/generations", json={"prompt": "x"}, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert httpx.get(f"{b_app.url}mcp/gradio_api/mcp/schema", timeout=30).status_code == 401


def test_mcp_client_lists_the_tools_and_calls_generate_and_edit(b_app):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def session():
        url = f"{b_app.url}mcp/gradio_api/mcp/"
        headers = {"Authorization": f"Bearer {KEY}"}
        async with streamablehttp_client(url, headers=headers) as (read, write, _), ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            made = await s.call_tool("generate_image", {"prompt": "a paper boat", "seed": 5, "steps": 2})
            url = made.content[1].text.split(": ", 1)[1]
            edited = await s.call_tool("edit_image", {"prompt": "make it red", "images": [url]})
            refused = await s.call_tool("edit_image", {"prompt": "x", "images": ["https://example.com/a.png"]})
            return tools, made, edited, refused

    tools, made, edited, refused = asyncio.run(session())
    assert set(tools) == {"generate_image", "edit_image"}
    schema = tools["generate_image"].inputSchema
    assert schema["required"] == ["prompt"] and schema["properties"]["seed"]["description"].startswith("A whole number")
    assert "1:1" in schema["properties"]["aspect_ratio"]["description"]
    assert not made.isError and made.content[0].type == "image" and made.content[2].text.startswith("seed 5 ·")
    assert not edited.isError and edited.content[0].type == "image"
    assert refused.isError and "nothing else is fetched" in refused.content[0].text
