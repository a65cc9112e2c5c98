"""A ``Backend`` over one or more remote OpenAI-Images servers (vLLM-Omni, SGLang Diffusion, this app).

Each request goes to the least busy server that is up and can do it (each server takes at most ``limit`` requests
at once; the job workers are sized to the total). A server that fails mid-request is marked down and the request is
tried once more on another one; the result's notes tell the user. A health check asks every server ``GET /models``
every few seconds, so a server that comes back is used again. Progress is honest: elapsed time against an estimate
learned from each server's past runs (the servers report no steps).

HTTP runs on one event loop in a background thread (httpx); a job thread waits for its request there, reporting
progress, and a Stop cancels the request (the connection closes). Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import fields

from qwen_image.backend import (
    REQUEST_SETTINGS,
    BackendError,
    BackendStatus,
    Cancelled,
    Capabilities,
    Progress,
    estimated_seconds,
    safe_progress,
    work_units,
)
from qwen_image.generation import GenerationRequest, GenerationResult, ResolvedRequest, ValidationError, resolve
from qwen_image.images import settle_alpha
from qwen_image.registry import ModelSpec, load_registry, resolve_model

from . import mapping
from .remote import Refused, RemoteServer, ServerFailed

log = logging.getLogger(__name__)

_DEFAULTS = {f.name: f.default for f in fields(GenerationRequest)}
_CANNOT = {
    "transparent": "make transparent images",
    "reference_resolution": "take a reference resolution (they use their own)",
}


class Unavailable(ValidationError):
    """No image server can take the request right now (all down, or none does this kind of request)."""


class _NoServer(Exception):
    pass


class RemotePool:
    """The remote servers as one backend. Build it with ``connect`` (which asks each server what it runs)."""

    def __init__(
        self,
        urls: list[str],
        spec: ModelSpec,
        key: str | None = None,
        limit: int = 1,
        check_interval: float = 5.0,
        transport=None,
    ):
        if not urls:
            raise ValueError("give at least one --backend URL")
        self.spec = spec
        self.servers = [RemoteServer(u, max(1, int(limit))) for u in urls]
        self.check_interval = check_interval
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._transport = transport
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._health: concurrent.futures.Future | None = None
        self._probed = False
        self._caps: Capabilities | None = None

    @classmethod
    def connect(
        cls,
        urls: list[str],
        model: str = "auto",
        key: str | None = None,
        limit: int = 1,
        check_interval: float = 5.0,
        transport=None,
        family: str | None = None,
    ) -> RemotePool:
        """Ask every server (in parallel, a few seconds at most) what it runs, and settle the model: ``model`` when
        given, else the model the first answering server runs (Qwen-Image-2.1 when none answers or it is unknown)."""
        reg = load_registry()
        pool = cls(urls, reg.get(reg.default_gpu), key, limit, check_interval, transport)
        pool.check_now()
        if model != "auto":
            pool.spec = resolve_model(model, family)
        else:
            found = [mapping.spec_for_model_id(s.model_id) for s in pool.servers if s.model_id]
            found = [spec for spec in found if spec is not None]
            if found:
                pool.spec = found[0]
            else:
                log.warning("no image server said which model it runs; assuming %s (pass --model)", pool.spec.label)
        with pool._cond:
            for server in pool.servers:
                pool._settle(server)
        pool._caps = pool._capabilities()
        return pool

    # -- the event loop ---------------------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._cond:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="remote-pool", daemon=True).start()
        return self._loop

    def _submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    async def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        return self._client

    def close(self) -> None:
        """Stop the health checks and the event loop (tests; the app runs until the process ends)."""
        if self._health is not None:
            self._health.cancel()
        loop = self._loop
        if loop is not None:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)

    # -- health -----------------------------------------------------------------------------------------------------
    async def _probe(self, server: RemoteServer) -> None:
        try:
            kind, model_id = await server.probe(await self._http(), self._headers)
        except ServerFailed as exc:
            with self._cond:
                if server.state != "down" or server.error != str(exc):
                    log.warning("image server %s is down: %s", server.name, exc)
                server.mark("down", str(exc))
                self._cond.notify_all()
            return
        with self._cond:
            was = server.state
            server.kind, server.model_id = kind, model_id
            server.mark("up")
            if self._probed:
                self._settle(server)
            if was != server.state and server.state == "up":
                log.info("image server %s is up: %s", server.name, server.describe())
            self._cond.notify_all()

    def _settle(self, server: RemoteServer) -> None:
        """What a server that answered can do for this pool's model (under the lock)."""
        if server.state not in ("up", "wrong-model"):
            return
        runs = mapping.spec_for_model_id(server.model_id)
        if runs is not None and (runs.family != self.spec.family or runs.tiny != self.spec.tiny):
            server.mark("wrong-model", f"it runs {runs.label}, not {self.spec.label}")
            return
        server.roles = mapping.roles_for(self.spec, server.model_id)
        server.mark("up")

    def check_now(self, timeout: float = 10.0) -> None:
        """Probe every server once, now (in parallel)."""

        async def all_probes():
            await asyncio.gather(*(self._probe(s) for s in self.servers))

        try:
            self._submit(all_probes()).result(timeout)
        except concurrent.futures.TimeoutError:
            pass
        with self._cond:
            self._probed = True

    def start(self) -> None:
        """Keep checking every server every ``check_interval`` seconds (idempotent)."""

        async def loop():
            while True:
                await asyncio.sleep(self.check_interval)
                await asyncio.gather(*(self._probe(s) for s in self.servers))

        with self._cond:
            if self._health is not None:
                return
        self._health = self._submit(loop())

    # -- Backend: status and capabilities ---------------------------------------------------------------------------
    @property
    def status(self) -> BackendStatus:
        with self._cond:
            up = sum(s.up for s in self.servers)
            described = "; ".join(s.describe() for s in self.servers)
            probed = self._probed
        state = "ready" if up else ("loading" if not probed else "error")
        noun = "image server" if len(self.servers) == 1 else "image servers"
        return BackendStatus(
            state=state,
            message=f"{up} of {len(self.servers)} {noun} up: {described}",
            model=self.spec.key,
            model_label=f"{self.spec.label}, on remote servers",
            profile="remote",
            device="remote",
            demo=self.spec.tiny,
        )

    def _capabilities(self) -> Capabilities:
        with self._cond:
            kinds = [s.kind if s.state in ("up", "wrong-model") else mapping.GENERIC for s in self.servers]
            edits = any("edit" in s.roles for s in self.servers)
            total = sum(s.limit for s in self.servers)
        settings = frozenset.intersection(*(k.settings for k in kinds))
        return Capabilities(
            max_references=self.spec.max_references if edits else 0,
            transparent=self.spec.transparent and "transparent" in settings,
            step_progress=False,
            settings=settings,
            concurrent_jobs=total,
        )

    @property
    def capabilities(self) -> Capabilities:
        """What the servers take, as known at start (a server that was down counts as a plain OpenAI-compatible
        one), so that the page shows the same settings all along."""
        if self._caps is None:
            self._caps = self._capabilities()
        return self._caps

    def wait_ready(self, timeout: float | None = None, cancel: threading.Event | None = None) -> None:
        if not any(s.up for s in self.servers):
            self.check_now()
        if not any(s.up for s in self.servers):
            raise BackendError(self.status.message)

    # -- Backend: requests ------------------------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Check a request for the model and for what the servers take; refuse when no server can take it now (so
        that nothing is stored for a request that cannot run)."""
        r = resolve(request, self.spec)  # the 1000-token check needs the tokenizer: done by the server, if at all
        caps = self.capabilities
        for name in sorted(REQUEST_SETTINGS - caps.settings):
            value = getattr(request, name)
            used = value is not None and value != _DEFAULTS[name]
            if name == "reference_resolution":
                used = used and r.reference_resolution != self.spec.reference_resolution
            if used:
                kinds = ", ".join(sorted({s.kind.label for s in self.servers}))
                what = _CANNOT.get(name, f"take the setting {name!r}")
                raise ValidationError(f"The image servers ({kinds}) cannot {what}.", name)
        role = "edit" if r.images else "generate"
        if r.images and caps.max_references == 0:
            raise Unavailable(
                "None of the image servers edits images (each runs one model, and these run a generation model); "
                "add a --backend that runs the edit model.",
                "images",
            )
        with self._cond:
            ready = any(s.up and role in s.roles for s in self.servers)
        if not ready:
            self.check_now()
            with self._cond:
                ready = any(s.up and role in s.roles for s in self.servers)
        if not ready:
            raise Unavailable(f"No image server can take this request right now ({self.status.message}). Try again.")
        return r

    def estimate_seconds(self, request: ResolvedRequest) -> float:
        units = work_units(request)
        with self._cond:
            rates = [s.estimate(units, self.spec) for s in self.servers if s.up]
        return min(rates) if rates else estimated_seconds(self.spec, request)

    def generate(
        self,
        request: ResolvedRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request on the least busy server; on a server failure, once more on another one."""
        r = request if isinstance(request, ResolvedRequest) else self.resolve(request)
        report = safe_progress(on_progress)
        role = "edit" if r.images else "generate"
        failed: list[tuple[RemoteServer, str]] = []
        while True:
            try:
                server = self._acquire(role, [s for s, _ in failed], cancel, report)
            except _NoServer:
                if not failed:
                    raise BackendError(f"No image server can take this request ({self.status.message}).") from None
                raise BackendError(_failures(failed) + " No other image server is available.") from None
            t0 = time.monotonic()
            try:
                images = self._wait(server, r, t0, report, cancel)
            except Refused as exc:
                raise ValidationError(f"The image server refused the request: {exc}") from None
            except ServerFailed as exc:
                self._down(server, str(exc))
                failed.append((server, str(exc)))
                if len(failed) > 1:
                    raise BackendError(_failures(failed) + " Nothing was made; try again later.") from None
                report(Progress("retrying", message=server.name))  # it failed; another one is tried
                continue
            finally:
                self._release(server)
            elapsed = time.monotonic() - t0
            with self._cond:
                server.learn(work_units(r), elapsed)
                server.served += 1
            notes = ()
            if failed:
                notes = (f"{_failures(failed)} The image was made on {server.name} instead.",)
            images = tuple(settle_alpha(img, r.transparent) for img in images)
            report(Progress("done", elapsed=elapsed, eta=0.0, message=server.name))
            return GenerationResult(images, r.seeds, r, {"total": round(elapsed, 4)}, notes)

    def _acquire(self, role: str, exclude: list, cancel, report) -> RemoteServer:
        """The least busy server that is up, can do ``role`` and has a free slot (waiting for one if all are busy)."""
        rechecked = False
        waited = False
        while True:
            with self._cond:
                usable = [s for s in self.servers if s.up and role in s.roles and s not in exclude]
                free = [s for s in usable if s.in_flight < s.limit]
                if free:
                    server = min(free, key=lambda s: (s.in_flight / s.limit, s.last_assigned))
                    server.in_flight += 1
                    server.last_assigned = time.monotonic()
                    return server
                if usable:
                    self._cond.wait(0.25)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if usable:
                if not waited:
                    report(Progress("waiting", message="every image server is busy"))
                    waited = True
                continue
            if rechecked:
                raise _NoServer()
            self.check_now()  # they may have come back since the last health check
            rechecked = True

    def _release(self, server: RemoteServer) -> None:
        with self._cond:
            server.in_flight -= 1
            self._cond.notify_all()

    def _down(self, server: RemoteServer, error: str) -> None:
        log.warning("image server %s failed: %s", server.name, error)
        with self._cond:
            server.mark("down", error)
            self._cond.notify_all()

    def _wait(self, server: RemoteServer, r: ResolvedRequest, t0: float, report, cancel) -> list:
        """The request's images from ``server``, reporting elapsed time against the estimate; a Stop cancels it."""

        async def run():
            return await server.run(await self._http(), self._headers, r, self.spec)

        future = self._submit(run())
        with self._cond:
            estimate = server.estimate(work_units(r), self.spec)
        while True:
            try:
                return future.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                pass
            except concurrent.futures.CancelledError:
                raise Cancelled() from None
            if cancel is not None and cancel.is_set():
                future.cancel()
                raise Cancelled()
            elapsed = time.monotonic() - t0
            report(Progress("remote", elapsed=elapsed, eta=max(0.0, estimate - elapsed), message=server.name))


def _failures(failed: list[tuple[RemoteServer, str]]) -> str:
    return " ".join(f"Image server {s.name} failed ({error})." for s, error in failed)
