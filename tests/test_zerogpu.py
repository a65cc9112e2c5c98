"""ZeroGPU wiring: GPU work runs inside ``spaces.GPU`` with a duration computed per job (a stand-in ``spaces``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from appserver import client, running_app

from conversations.zerogpu import job_duration
from qwen_image.backend import estimated_seconds
from qwen_image.registry import load_registry

FAKE_SPACES = '''
import json, os


def GPU(duration=60):
    """Like the real decorator: the duration callable gets the function's arguments; generators are streamed."""
    def wrap(fn):
        def run(*args, **kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            with open(os.environ["FAKE_SPACES_LOG"], "a") as log:
                log.write(json.dumps({"seconds": seconds, "args": [str(a) for a in args]}) + "\\n")
            yield from fn(*args, **kwargs)
        return run
    return wrap
'''


def req(steps=30, width=1024, height=1024, images=1, cfg=False):
    return SimpleNamespace(steps=steps, width=width, height=height, num_images=images, uses_cfg=cfg)


def duration(request, model="qwen-image-2.1"):
    return job_duration(estimated_seconds(load_registry().get(model), request))


def test_job_duration_grows_with_the_work_and_stays_within_bounds():
    base = duration(req())
    assert 30 <= base <= 300
    assert duration(req(steps=60)) > base
    assert duration(req(cfg=True)) > base
    assert duration(req(), "qwen-image") > base  # the 20B transformer is slower (its speed is in the registry)
    assert duration(req(steps=4, width=512, height=512)) == 30
    assert duration(req(steps=100, width=2048, height=2048, images=4, cfg=True), "qwen-image") == 300


@pytest.mark.slow
def test_chat_runs_inside_spaces_gpu_on_zerogpu(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "spaces.py").write_text(FAKE_SPACES)
    log = tmp_path / "gpu-calls.jsonl"
    env = {"SPACES_ZERO_GPU": "1", "PYTHONPATH": str(fake), "FAKE_SPACES_LOG": str(log)}
    with running_app(tmp_path / "data", env=env) as app:
        c = client(app)
        c.predict({"text": "a red fox", "files": []}, api_name="/chat")
        out = c.predict({"text": "make it blue", "files": []}, api_name="/chat")
        assert "#2" in out[1]
        gallery = c.predict("a lighthouse", api_name="/generate")[0]
        assert len(gallery) == 1
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3  # one GPU slot per job, each with its own duration
    assert all(30 <= call["seconds"] <= 300 for call in calls)


def test_the_openai_api_is_refused_on_zerogpu_with_a_reason(tmp_path):
    """Requests from outside the page cannot get a ZeroGPU slot: the app says so at start instead of queueing them
    forever."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "spaces.py").write_text(FAKE_SPACES)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SPACES_ZERO_GPU": "1", "PYTHONPATH": str(fake)}
    app = Path(__file__).resolve().parent.parent / "app.py"
    args = [sys.executable, str(app), "--data-dir", str(tmp_path / "data"), "--port", "0", "--openai-api"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "--openai-api and --mcp are not available on ZeroGPU" in done.stderr
