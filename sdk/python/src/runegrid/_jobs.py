"""The job client: a coordinator's HTTP API as far as jobs go. Requests, uploads, submission,
waiting for results, and job events.

:class:`JobClient` holds the connection (URL, token, httpx clients) and the call defaults, and
offers the public job methods; :class:`~runegrid.Grid` is a :class:`JobClient` with programs,
accounts and chat on top. The module functions below are the engine that ``grid.py``,
``calls.py`` and ``chat.py`` share: submitting a job with a server-side wait, waiting for it
until a deadline (cancelling it on a timeout or an interrupt), following its events. They
take a :class:`JobClient` rather than living on it, so that they do not become methods of
:class:`~runegrid.Grid`.

Layering: this module imports none of ``grid``, ``calls`` and ``chat``; they import it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from . import _protocol as p
from ._sse import SseParser
from .errors import ApiError, CallTimeout, ConnectionFailed, RunegridError, api_error
from .options import Options
from .results import TaskResult

#: How long a request waits for one of several coordinators to become active (a takeover)
#: before it fails with an :class:`ApiError` ``standby``.
FAILOVER_WAIT = 30.0
#: The header in which a standby coordinator names the active one (empty while none is).
ACTIVE_HEADER = "x-runegrid-active"
#: The pause after every coordinator of the list refused a request in turn.
FAILOVER_PAUSE = 0.2


def split_urls(url: str) -> list[str]:
    """The coordinator URLs of ``url`` (several, comma-separated, for failover)."""
    urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"no coordinator URL in {url!r}")
    return urls


def _is_standby(r: httpx.Response) -> bool:
    return r.status_code == 503 and ACTIVE_HEADER in r.headers


class JobClient:
    """A coordinator's job API over HTTP: the connection and the defaults of every call.

    ``url`` is the coordinator's base URL, or several comma-separated ones of coordinators
    that share a database (one active, the others standing by): a request a standby refuses,
    or one that could not connect, goes to the coordinator the standby names, else to the
    next URL, for up to :data:`FAILOVER_WAIT` seconds; a request whose connection broke after
    it was sent is not repeated (it may have been done). ``token`` its API token (``None``: no
    ``authorization`` header), ``options`` the :class:`~runegrid.Options` every call made
    through it starts from, ``http_timeout`` the bound on connecting and on each ordinary
    request (waits for results get their own, longer read timeout).
    """

    def __init__(self, url: str, token: str | None, options: Options, http_timeout: float) -> None:
        self.urls = split_urls(url)
        self._at = 0
        self.token = token
        self.options = options
        self.http_timeout = http_timeout
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: object = None
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection

    @property
    def url(self) -> str:
        """The base URL of the coordinator requests go to now (the active one, as far as this
        client knows)."""
        return self.urls[self._at]

    def _headers(self) -> dict[str, str]:
        h = {"user-agent": "runegrid-python/0.1"}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    @property
    def client(self) -> httpx.Client:
        """The synchronous httpx client (made on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        base_url=self.url, headers=self._headers(), timeout=self.http_timeout
                    )
                client = self._client
        return client

    @property
    def aclient(self) -> httpx.AsyncClient:
        """The asynchronous httpx client of the running event loop (made on first use; a new
        one when the loop changed, e.g. between two ``asyncio.run``)."""
        try:
            loop: object = asyncio.get_running_loop()
        except RuntimeError:  # another async library (trio): one client
            loop = None
        if self._aclient is None or self._aloop is not loop:
            self._aclient = httpx.AsyncClient(
                base_url=self.url, headers=self._headers(), timeout=self.http_timeout
            )
            self._aloop = loop
        return self._aclient

    def close(self) -> None:
        """Closes the synchronous client (an async client is closed by :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Closes both clients."""
        self.close()
        if self._aclient is not None:
            client, self._aclient = self._aclient, None
            await client.aclose()

    # ------------------------------------------------------------------ sending (failover)

    def _refused(self, tries: int, deadline: float, hint: str | None) -> float:
        """Moves on after the current coordinator refused (standby) or could not be reached:
        to the one the standby named when it is in the list, else the next; returns how long
        to pause first (after a full round of refusals); past ``deadline`` raises
        :class:`ApiError` ``standby``."""
        if time.monotonic() > deadline:
            raise ApiError(
                "standby",
                f"no coordinator of {', '.join(self.urls)} is active after {FAILOVER_WAIT:g} s",
                503,
            )
        n = len(self.urls)
        named = self.urls.index(hint) if hint in self.urls else None
        self._at = named if named is not None else (self._at + 1) % n
        # A pause after every full round of refusals; a standby that names the active one is
        # followed at once, but not forever (it may name one that just died).
        if tries % n == 0 and (named is None or tries > n):
            return FAILOVER_PAUSE
        return 0.0

    def send(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Sends one request (``path`` below the base URL; ``kwargs`` as httpx's
        ``build_request``) to the active coordinator, failing over between several URLs;
        raises httpx's transport errors. With ``stream`` the body is not read (close the
        answer, or use :meth:`stream`)."""
        client = self.client
        deadline = time.monotonic() + FAILOVER_WAIT
        tries = 0
        while True:
            req = client.build_request(method, self.url + path, **kwargs)
            hint: str | None = None
            try:
                r = client.send(req, stream=stream)
            except httpx.ConnectError:
                if len(self.urls) == 1:
                    raise
            else:
                if len(self.urls) == 1 or not _is_standby(r):
                    return r
                hint = r.headers.get(ACTIVE_HEADER, "").rstrip("/")
                r.close()
            tries += 1
            pause = self._refused(tries, deadline, hint)
            if pause:
                time.sleep(pause)

    async def send_async(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The async form of :meth:`send`."""
        client = self.aclient
        deadline = time.monotonic() + FAILOVER_WAIT
        tries = 0
        while True:
            req = client.build_request(method, self.url + path, **kwargs)
            hint: str | None = None
            try:
                r = await client.send(req, stream=stream)
            except httpx.ConnectError:
                if len(self.urls) == 1:
                    raise
            else:
                if len(self.urls) == 1 or not _is_standby(r):
                    return r
                hint = r.headers.get(ACTIVE_HEADER, "").rstrip("/")
                await r.aclose()
            tries += 1
            pause = self._refused(tries, deadline, hint)
            if pause:
                await anyio.sleep(pause)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer (SSE) from the active coordinator: :meth:`send` with ``stream``,
        closed on the way out."""
        r = self.send(method, path, stream=True, **kwargs)
        try:
            yield r
        finally:
            r.close()

    @asynccontextmanager
    async def stream_async(
        self, method: str, path: str, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """The async form of :meth:`stream`."""
        r = await self.send_async(method, path, stream=True, **kwargs)
        try:
            yield r
        finally:
            await r.aclose()

    # ------------------------------------------------------------------ plain requests

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """One API request; returns the decoded JSON answer or raises :class:`ApiError` /
        :class:`ConnectionFailed`."""
        headers = {}
        if body is not None:
            content = p.dumps(body)
            headers["content-type"] = "application/json"
        timeout = httpx.Timeout(self.http_timeout, read=read_timeout or self.http_timeout)
        try:
            r = self.send(
                method, path, content=content, params=params, headers=headers, timeout=timeout
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e!r}") from e
        return _answer(r)

    async def request_async(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """The async form of :meth:`request`."""
        headers = {}
        if body is not None:
            content = p.dumps(body)
            headers["content-type"] = "application/json"
        timeout = httpx.Timeout(self.http_timeout, read=read_timeout or self.http_timeout)
        try:
            r = await self.send_async(
                method, path, content=content, params=params, headers=headers, timeout=timeout
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e!r}") from e
        return _answer(r)

    # ------------------------------------------------------------------ jobs

    def job(self, job: int) -> dict[str, Any]:
        """A job's status: counts by state, ``state``, ``waiting_for``, ..."""
        return self.request("GET", f"/v1/jobs/{int(job)}")  # type: ignore[no-any-return]

    async def job_async(self, job: int) -> dict[str, Any]:
        return await self.request_async("GET", f"/v1/jobs/{int(job)}")  # type: ignore[no-any-return]

    def cancel(self, job: int) -> dict[str, Any]:
        """Cancels a job's queued and running tasks; returns its status."""
        return self.request("DELETE", f"/v1/jobs/{int(job)}")  # type: ignore[no-any-return]

    async def cancel_async(self, job: int) -> dict[str, Any]:
        return await self.request_async("DELETE", f"/v1/jobs/{int(job)}")  # type: ignore[no-any-return]

    def upload(self, module: bytes) -> str:
        """Uploads a WASI module (binary or WAT text); returns its program hash."""
        info = self.request("POST", "/v1/programs", content=bytes(module), read_timeout=120)
        self._uploaded.add(info["program"])
        return str(info["program"])

    async def upload_async(self, module: bytes) -> str:
        info = await self.request_async(
            "POST", "/v1/programs", content=bytes(module), read_timeout=120
        )
        self._uploaded.add(info["program"])
        return str(info["program"])

    def submit(self, program: str, tasks: Sequence[dict[str, Any]], **options: Any) -> int:
        """Submits a job (``tasks``: dicts with ``args``/``stdin``/``env``) of an uploaded
        program (or ``"rune"``); returns its id. See :meth:`results`, :meth:`wait`,
        :meth:`events`."""
        body = job_body(program, tasks, self.options.replace(**options))
        return int(post_job(self, body, None)["job"])

    async def submit_async(
        self, program: str, tasks: Sequence[dict[str, Any]], **options: Any
    ) -> int:
        body = job_body(program, tasks, self.options.replace(**options))
        return int((await post_job_async(self, body, None))["job"])

    def results(self, job: int, wait: float | None = None) -> list[TaskResult]:
        """A job's results as they stand, in task order; with ``wait``, after waiting up to
        that many seconds for the job to finish."""
        params = {"wait": wait} if wait else None
        read = (wait or 0) + p.READ_SLACK
        body = self.request("GET", f"/v1/jobs/{int(job)}/results", params=params, read_timeout=read)
        return p.parse_results(body)

    async def results_async(self, job: int, wait: float | None = None) -> list[TaskResult]:
        params = {"wait": wait} if wait else None
        read = (wait or 0) + p.READ_SLACK
        body = await self.request_async(
            "GET", f"/v1/jobs/{int(job)}/results", params=params, read_timeout=read
        )
        return p.parse_results(body)

    def file(self, job: int | TaskResult, index: int | str = 0, path: str | None = None) -> bytes:
        """The bytes of a file a task left under ``/out``: ``file(result, "out.txt")`` or
        ``file(job, index, "out.txt")`` (``path`` below ``/out``, as
        :attr:`TaskResult.files <runegrid.TaskResult.files>` lists it)."""
        url = _file_path(job, index, path)
        try:
            r = self.send("GET", url, timeout=httpx.Timeout(self.http_timeout, read=600))
        except httpx.TransportError as e:
            raise ConnectionFailed(f"GET {self.url}{url}: {e!r}") from e
        if r.status_code >= 400:
            raise api_error(r.status_code, r.content)
        return r.content

    async def file_async(
        self, job: int | TaskResult, index: int | str = 0, path: str | None = None
    ) -> bytes:
        url = _file_path(job, index, path)
        try:
            r = await self.send_async(
                "GET", url, timeout=httpx.Timeout(self.http_timeout, read=600)
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"GET {self.url}{url}: {e!r}") from e
        if r.status_code >= 400:
            raise api_error(r.status_code, r.content)
        return r.content

    def wait(self, job: int, timeout: float | None = None) -> list[TaskResult]:
        """Waits until every task of ``job`` is final and returns the results; raises
        :class:`CallTimeout` (and cancels the job) after ``timeout`` seconds."""
        return await_final(self, job, p.deadline_after(timeout), None, timeout)

    async def wait_async(self, job: int, timeout: float | None = None) -> list[TaskResult]:
        return await await_final_async(self, job, p.deadline_after(timeout), None, timeout)

    def events(
        self, job: int, timeout: float | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """The job's events (``GET /v1/jobs/{id}/events``) as dicts with a ``type``:
        ``progress``, ``stdout``, ``task``, ``corrected``, ``done`` (the last). Stops after
        ``done``, or silently once ``timeout`` seconds have passed."""
        return iter_events(self, job, p.deadline_after(timeout))

    def events_async(
        self, job: int, timeout: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        return iter_events_async(self, job, p.deadline_after(timeout))


# ---------------------------------------------------------------------- uploads


def is_uploaded(jobs: JobClient, program: str) -> bool:
    """Whether this client uploaded the program (so a job may name it)."""
    return program in jobs._uploaded


def mark_uploaded(jobs: JobClient, program: str) -> None:
    """Notes that the program was uploaded (by a request made outside :meth:`JobClient.upload`,
    e.g. a GPU kernel's)."""
    jobs._uploaded.add(program)


def forget_upload(jobs: JobClient, program: str) -> None:
    """Forgets an upload (the coordinator did not know the program after all)."""
    jobs._uploaded.discard(program)


# ---------------------------------------------------------------------- engine (sync)


def job_body(program: str, tasks: Sequence[dict[str, Any]], opts: Options) -> dict[str, Any]:
    """The body of ``POST /v1/jobs``."""
    return {"program": program, "tasks": list(tasks), **opts.job_fields()}


def post_job(jobs: JobClient, body: dict[str, Any], wait: float | None) -> dict[str, Any]:
    """Submits a job; with ``wait``, the coordinator answers once the job is final or after
    that many seconds, with the results it has (``results``) next to the job's id."""
    params = {"wait": wait} if wait and wait > 0 else None
    read = (wait or 0) + p.READ_SLACK
    return jobs.request(  # type: ignore[no-any-return]
        "POST", "/v1/jobs", body=body, params=params, read_timeout=read
    )


def await_final(
    jobs: JobClient,
    job: int,
    deadline: float | None,
    results: list[TaskResult] | None,
    timeout: float | None,
) -> list[TaskResult]:
    """Polls (with server-side waits) until every task is final; past ``deadline`` cancels
    the job and raises :class:`CallTimeout` (``timeout`` is what the message says); an
    interrupt cancels the job too."""
    try:
        while not p.all_final(results):
            w = p.wait_secs(deadline)
            if w <= 0:
                _time_out(jobs, job, timeout)
            results = jobs.results(job, wait=w)
    except KeyboardInterrupt:
        cancel_quietly(jobs, job)
        raise
    assert results is not None
    return results


def _time_out(jobs: JobClient, job: int, timeout: float | None) -> None:
    waiting_for = None
    try:
        waiting_for = jobs.job(job).get("waiting_for")
    except RunegridError:
        pass
    cancel_quietly(jobs, job)
    raise CallTimeout(f"job {job} did not finish within {timeout} s", job, waiting_for)


def cancel_quietly(jobs: JobClient, job: int) -> None:
    """Cancels a job, ignoring any error (used on the way out of a timeout or interrupt)."""
    try:
        jobs.request("DELETE", f"/v1/jobs/{int(job)}", read_timeout=5)
    except RunegridError:
        pass


def iter_events(
    jobs: JobClient, job: int, deadline: float | None
) -> Generator[dict[str, Any], None, None]:
    """The job's events until ``done`` or ``deadline``; a silent or broken stream is
    reopened (a connection that keeps failing raises :class:`ConnectionFailed`)."""
    quiet_reopens = 0
    while True:
        left = p.remaining(deadline)
        if left is not None and left <= 0:
            return
        read = p.EVENT_SILENCE if left is None else max(0.05, min(p.EVENT_SILENCE, left))
        got_any = False
        try:
            with jobs.stream(
                "GET",
                f"/v1/jobs/{int(job)}/events",
                timeout=httpx.Timeout(jobs.http_timeout, read=read),
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise api_error(r.status_code, r.content)
                parser = SseParser()
                for line in r.iter_lines():
                    ev = parser.feed(line)
                    if ev is None:
                        continue
                    got_any = True
                    yield ev
                    if ev.get("type") == "done":
                        return
        except httpx.ReadTimeout:
            pass
        except httpx.TransportError as e:
            if quiet_reopens >= 3:
                raise ConnectionFailed(f"event stream of job {job}: {e!r}") from e
            time.sleep(0.2 * (quiet_reopens + 1))
        quiet_reopens = 0 if got_any else quiet_reopens + 1


# ---------------------------------------------------------------------- engine (async)


async def post_job_async(
    jobs: JobClient, body: dict[str, Any], wait: float | None
) -> dict[str, Any]:
    params = {"wait": wait} if wait and wait > 0 else None
    read = (wait or 0) + p.READ_SLACK
    return await jobs.request_async(  # type: ignore[no-any-return]
        "POST", "/v1/jobs", body=body, params=params, read_timeout=read
    )


async def await_final_async(
    jobs: JobClient,
    job: int,
    deadline: float | None,
    results: list[TaskResult] | None,
    timeout: float | None,
) -> list[TaskResult]:
    try:
        while not p.all_final(results):
            w = p.wait_secs(deadline)
            if w <= 0:
                await _time_out_async(jobs, job, timeout)
            results = await jobs.results_async(job, wait=w)
    except anyio.get_cancelled_exc_class():
        with anyio.move_on_after(5, shield=True):
            await cancel_quietly_async(jobs, job)
        raise
    assert results is not None
    return results


async def _time_out_async(jobs: JobClient, job: int, timeout: float | None) -> None:
    waiting_for = None
    try:
        waiting_for = (await jobs.job_async(job)).get("waiting_for")
    except RunegridError:
        pass
    await cancel_quietly_async(jobs, job)
    raise CallTimeout(f"job {job} did not finish within {timeout} s", job, waiting_for)


async def cancel_quietly_async(jobs: JobClient, job: int) -> None:
    try:
        await jobs.request_async("DELETE", f"/v1/jobs/{int(job)}", read_timeout=5)
    except RunegridError:
        pass


async def iter_events_async(
    jobs: JobClient, job: int, deadline: float | None
) -> AsyncGenerator[dict[str, Any], None]:
    quiet_reopens = 0
    while True:
        left = p.remaining(deadline)
        if left is not None and left <= 0:
            return
        read = p.EVENT_SILENCE if left is None else max(0.05, min(p.EVENT_SILENCE, left))
        got_any = False
        try:
            async with jobs.stream_async(
                "GET",
                f"/v1/jobs/{int(job)}/events",
                timeout=httpx.Timeout(jobs.http_timeout, read=read),
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise api_error(r.status_code, r.content)
                parser = SseParser()
                async for line in r.aiter_lines():
                    ev = parser.feed(line)
                    if ev is None:
                        continue
                    got_any = True
                    yield ev
                    if ev.get("type") == "done":
                        return
        except httpx.ReadTimeout:
            pass
        except httpx.TransportError as e:
            if quiet_reopens >= 3:
                raise ConnectionFailed(f"event stream of job {job}: {e!r}") from e
            await anyio.sleep(0.2 * (quiet_reopens + 1))
        quiet_reopens = 0 if got_any else quiet_reopens + 1


def _file_path(job: int | TaskResult, index: int | str, path: str | None) -> str:
    """The API path of an output file, from ``(result, path)`` or ``(job, index, path)``."""
    if isinstance(job, TaskResult):
        job, index, path = job.job, job.index, str(index)
    if path is None:
        raise TypeError("file() needs the file's path")
    quoted = "/".join(quote(part, safe="") for part in path.split("/"))
    return f"/v1/jobs/{int(job)}/tasks/{int(index)}/files/{quoted}"


def _answer(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise api_error(r.status_code, r.content)
    try:
        return r.json()
    except ValueError as e:
        raise ApiError("invalid_response", f"not JSON: {r.text[:200]!r}", r.status_code) from e
