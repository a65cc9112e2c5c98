"""One remote OpenAI-Images server: what it runs, whether it answers, how busy it is, and one request to it.

The coroutines run on the pool's event loop (``serving.pool``); the state is read and changed under the pool's lock.
A failure is classified for the pool: ``Refused`` (the server understood and said no: the user's request is at
fault, another server would say the same) or ``ServerFailed`` (down, broken, overloaded or misconfigured: mark it
and try another one).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from qwen_image.generation import ResolvedRequest
from qwen_image.registry import ModelSpec

from . import mapping

PROBE_TIMEOUT = 3.0  # seconds for a health check
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 1800.0  # a large image on a busy server can take minutes


class Refused(Exception):
    """The server answered 4xx about the request itself; ``str()`` is its message."""


class ServerFailed(Exception):
    """The server could not do the request: unreachable, 5xx, a wrong key, an unreadable answer."""


def display_name(url: str) -> str:
    """host:port of a base URL (for messages; never the key)."""
    parts = urlsplit(url)
    return parts.netloc or url


@dataclass
class RemoteServer:
    url: str  # base URL as the OpenAI SDK takes it, e.g. http://gpu-box:8000/v1
    limit: int = 1  # requests it is given at once
    name: str = ""
    state: str = "unknown"  # unknown | up | down | wrong-model
    kind: mapping.ServerKind = mapping.GENERIC
    model_id: str | None = None
    roles: frozenset = frozenset({"generate", "edit"})
    error: str = ""
    in_flight: int = 0
    served: int = 0
    last_assigned: float = 0.0
    seconds_per_unit: float | None = None  # measured seconds per megapixel-step (moving average)

    def __post_init__(self):
        self.url = self.url.rstrip("/")
        self.name = self.name or display_name(self.url)

    @property
    def up(self) -> bool:
        return self.state == "up"

    def describe(self) -> str:
        if self.state == "up":
            busy = f", {self.in_flight}/{self.limit} busy" if self.in_flight else ""
            return f"{self.name} ({self.kind.label}{busy})"
        return f"{self.name} ({self.state}: {self.error})" if self.error else f"{self.name} ({self.state})"

    # -- talking to it --------------------------------------------------------------------------------------------
    async def probe(self, client, headers: dict) -> tuple[mapping.ServerKind, str | None]:
        """Ask ``GET /models`` what it runs; raises ServerFailed when it does not answer properly."""
        import httpx

        try:
            response = await client.get(f"{self.url}/models", headers=headers, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise ServerFailed(_transport_error(exc)) from None
        if response.status_code in (401, 403):
            raise ServerFailed(f"it refused the API key (HTTP {response.status_code}); check --backend-key")
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            reason = mapping.error_text(payload, "")
            raise ServerFailed(f"GET /models answered HTTP {response.status_code}" + (f": {reason}" if reason else ""))
        try:
            return mapping.kind_from_models(payload)
        except ValueError as exc:
            raise ServerFailed(str(exc)) from None

    async def run(self, client, headers: dict, r: ResolvedRequest, spec: ModelSpec) -> list:
        """Make the request's images (one or more HTTP calls); raises Refused or ServerFailed."""
        images = []
        for call in mapping.calls_for(r, spec, self.kind, self.model_id):
            images.extend(await self._send(client, headers, call))
        return images

    async def _send(self, client, headers: dict, call: mapping.Call) -> list:
        import httpx

        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        url = f"{self.url}{call.path}"
        try:
            if call.multipart:
                response = await client.post(
                    url, data=call.form(), files=list(call.files), headers=headers, timeout=timeout
                )
            else:
                response = await client.post(url, json=call.fields, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ServerFailed(_transport_error(exc)) from None
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if status == 200:
            try:
                return mapping.images_from(payload, call.count)
            except ValueError as exc:
                raise ServerFailed(f"its answer is not usable: {exc}") from None
        message = mapping.error_text(payload, response.text[:300].strip() or f"HTTP {status}")
        if status in (401, 403):
            raise ServerFailed(f"it refused the API key (HTTP {status}); check --backend-key")
        if status == 429 or status >= 500 or status in (404, 405):  # busy, broken, or not an Images API at this URL
            raise ServerFailed(f"HTTP {status}: {message}")
        raise Refused(message)

    def learn(self, units: float, seconds: float) -> None:
        """Fold one measured run into the speed estimate (units: megapixel-steps, CFG passes counted)."""
        if units <= 0 or seconds <= 0:
            return
        rate = seconds / units
        self.seconds_per_unit = rate if self.seconds_per_unit is None else 0.7 * self.seconds_per_unit + 0.3 * rate

    def estimate(self, units: float, spec: ModelSpec) -> float:
        return units * (self.seconds_per_unit or spec.seconds_per_megapixel_step)

    def mark(self, state: str, error: str = "") -> None:
        self.state, self.error = state, error


def _transport_error(exc) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection broke off mid-request"
    return f"{type(exc).__name__}: {exc}"[:200]
