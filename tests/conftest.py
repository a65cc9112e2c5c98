"""Shared fixtures: tiny random-weight engines of both model families, loaded once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# No Hub access in tests; tiny models are built locally into a cache folder kept between local runs.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QWEN_IMAGE_CACHE", os.path.join(tempfile.gettempdir(), "qic-tests"))
# The tiny models run fastest on one intra-op thread; more threads only fight over a small (often shared) CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The Hugging Face cache of this session is the Hub-layout fixture (tests/hub_fixture.py), so that the registry's real
# repo ids resolve offline exactly as on a user's machine. huggingface_hub reads HF_HOME once, at import: set it first.
import hub_fixture  # noqa: E402

HUB_HOME = hub_fixture.default_home()
os.environ["HF_HOME"] = str(HUB_HOME)
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_var, None)


def _tiny_engine(model: str):
    from qwen_image.factory import build_engine, choose_setup

    # the CPU profile even where a GPU is present: these are the CPU tests (tests/test_gpu.py covers CUDA)
    engine = build_engine(choose_setup(model, profile="cpu"))
    engine.start()
    engine.wait_ready()
    return engine


@pytest.fixture(scope="session")
def engine21():
    """Tiny Qwen-Image-2.1 family engine (one pipeline generates and edits), CPU profile."""
    return _tiny_engine("tiny")


@pytest.fixture(scope="session")
def engine20():
    """Tiny Qwen-Image 20B family engine (generate + edit pipelines), CPU profile."""
    return _tiny_engine("tiny-qwen-image")


@pytest.fixture(scope="session")
def hub_home():
    """The Hub-layout fixture's HF_HOME, built on first use (about a minute) and kept per machine."""
    return hub_fixture.ensure(HUB_HOME)


# -- the browser tests (tests/test_browser*.py) share one Chromium and one app process ------------------------------
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium driven by Playwright (skips where it is not installed); one per module, so that Playwright's
    event loop is gone before tests that run their own (asyncio.run)."""
    if not CHROMIUM or not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (scripts/test.sh installs it; or set CHROMIUM to its path)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def browser_app(tmp_path_factory):
    """`python app.py` with the tiny model and its local prompt enhancer, a little slow motion per step so that jobs
    can be watched; each browser context is a new visitor (its own conversations)."""
    from appserver import AppProcess

    data = tmp_path_factory.mktemp("browser-app") / "data"
    proc = AppProcess(data, env={"QIC_STEP_DELAY": "0.3"}).start()
    yield proc
    proc.stop()
