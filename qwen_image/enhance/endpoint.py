"""The endpoint prompt enhancer: any OpenAI-compatible chat-completions server writes the rewrite.

A vLLM server with the official Qwen-Image-2.1-PE-T2I / PE-I2I models, a hosted API, or a local Ollama. The request
is a system message (our instructions, or the file given with ``system_prompt``) and a user message with the images
being edited (PNG data URIs, in order) and the prompt. The answer is read as it streams (server-sent events) when the
server streams, or in one piece when it does not. Timeouts: connecting, the silence between two pieces, and the
whole answer. Every failure becomes an ``EnhancerError`` with a one-line reason.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..backend import Cancelled
from .base import Enhancer, EnhancerConfig, EnhancerError, EnhanceTask, OnText


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL (".../v1") or the full ".../chat/completions" URL
    model: str = ""  # empty: the server's first model (GET /models)
    key: str = ""  # sent as a bearer token
    system_prompt: str = ""  # replaces our instructions (e.g. the official PE checkpoint's system_prompt.txt)

    @property
    def completions_url(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"

    @property
    def models_url(self) -> str:
        return self.completions_url[: -len("/chat/completions")] + "/models"

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        return parts.netloc or self.url


def read_system_prompt(path: str | None) -> str:
    """A system prompt file, or a checkpoint folder holding ``system_prompt.txt``; "" for None."""
    if not path:
        return ""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "system_prompt.txt"
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the enhancer system prompt {p}: {exc.strerror or exc}") from None


def data_uri(image, max_pixels: int) -> str:
    from .local import fit

    buf = io.BytesIO()
    fit(image, max_pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class EndpointEnhancer(Enhancer):
    """Rewrites through a chat-completions endpoint (``edit``: another endpoint for edits, e.g. the PE-I2I model)."""

    def __init__(self, endpoint: Endpoint, config: EnhancerConfig | None = None, edit: Endpoint | None = None):
        super().__init__(config)
        self.endpoint = endpoint
        self.edit_endpoint = edit or endpoint
        self.name = f"endpoint ({endpoint.model or 'default model'} at {endpoint.host})"
        self._models: dict[str, str] = {}

    def messages(self, task: EnhanceTask, endpoint: Endpoint) -> list[dict]:
        system = endpoint.system_prompt or self.config.system_prompt(task)
        pixels = self.config.endpoint.image_max_pixels
        parts = [{"type": "image_url", "image_url": {"url": data_uri(img, pixels)}} for img in task.images]
        user = [*parts, {"type": "text", "text": task.prompt}] if parts else task.prompt
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _timeout(self) -> httpx.Timeout:
        s = self.config.endpoint
        return httpx.Timeout(s.read_timeout, connect=s.connect_timeout, pool=s.connect_timeout)

    def _headers(self, endpoint: Endpoint) -> dict:
        return {"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {}

    def _model(self, client: httpx.Client, endpoint: Endpoint) -> str:
        """The model to ask for: the configured one, else the first the server lists (vLLM serves one)."""
        if endpoint.model:
            return endpoint.model
        if endpoint.url not in self._models:
            response = client.get(endpoint.models_url, headers=self._headers(endpoint))
            _check(response, endpoint)
            try:
                self._models[endpoint.url] = response.json()["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise EnhancerError("the enhancer endpoint did not list a model; pass --enhancer-model") from None
        return self._models[endpoint.url]

    def _generate(self, task: EnhanceTask, report: OnText, cancel: threading.Event | None) -> tuple[str, int]:
        s = self.config.endpoint
        endpoint = self.edit_endpoint if task.images else self.endpoint
        deadline = time.monotonic() + s.total_timeout
        try:
            with httpx.Client(timeout=self._timeout(), follow_redirects=False) as client:
                body = {
                    "model": self._model(client, endpoint),
                    "messages": self.messages(task, endpoint),
                    "max_tokens": s.max_tokens,
                    "temperature": s.temperature,
                    "top_p": s.top_p,
                    "stream": s.stream,
                }
                with client.stream(
                    "POST", endpoint.completions_url, json=body, headers=self._headers(endpoint)
                ) as response:
                    _check(response, endpoint)
                    if "text/event-stream" in response.headers.get("content-type", ""):
                        return _read_events(response, report, cancel, deadline, s.total_timeout), 0
                    return _read_whole(response, cancel, deadline, s.total_timeout), 0
        except (Cancelled, EnhancerError):
            raise
        except httpx.TimeoutException:
            raise EnhancerError(f"the enhancer at {endpoint.host} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise EnhancerError(f"could not reach the enhancer at {endpoint.host}: {type(exc).__name__}") from None


def _check(response: httpx.Response, endpoint: Endpoint) -> None:
    if response.status_code >= 400:
        raise EnhancerError(f"the enhancer at {endpoint.host} answered HTTP {response.status_code}")


def _stopped(cancel, deadline: float, total: float) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if time.monotonic() > deadline:
        raise EnhancerError(f"the enhancer took longer than {total:g} s")


def _read_whole(response: httpx.Response, cancel, deadline: float, total: float) -> str:
    chunks = []
    for chunk in response.iter_bytes():
        _stopped(cancel, deadline, total)
        chunks.append(chunk)
    try:
        message = json.loads(b"".join(chunks))["choices"][0]["message"]
        content = message.get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise EnhancerError("the enhancer's reply was not a chat completion (malformed JSON)") from None
    if not isinstance(content, str):
        raise EnhancerError("the enhancer's reply had no text")
    return content


def _read_events(response: httpx.Response, report: OnText, cancel, deadline: float, total: float) -> str:
    """The answer of a streamed completion; reasoning (a thinking model's) is skipped, its content kept."""
    content: list[str] = []
    for line in response.iter_lines():
        _stopped(cancel, deadline, total)
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
            if "error" in event and not event.get("choices"):
                raise EnhancerError(f"the enhancer reported an error: {str(event['error'])[:200]}")
            choices = event.get("choices") or []
            delta = (choices[0].get("delta") or {}) if choices else {}
            piece = delta.get("content")
        except (ValueError, AttributeError, IndexError, TypeError):
            raise EnhancerError("the enhancer's stream was not valid JSON") from None
        if isinstance(piece, str) and piece:
            content.append(piece)
            report("".join(content))
    return "".join(content)
