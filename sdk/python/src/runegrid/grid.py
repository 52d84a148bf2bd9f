"""The connection to a coordinator: :class:`Grid`."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncGenerator, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

import anyio
import httpx

from . import _protocol as p
from ._sse import SseParser
from .chat import (
    DEFAULT_MODEL,
    AsyncChatStream,
    ChatReply,
    ChatStream,
    Messages,
    ModelInfo,
    chat_body,
    chat_options,
    parse_models,
    post_reply,
    post_reply_async,
)
from .errors import ApiError, CallTimeout, ConnectionFailed, RunegridError, api_error
from .options import Options
from .results import TaskResult

if TYPE_CHECKING:
    from .calls import Script, WasmProgram

DEFAULT_URL = "http://127.0.0.1:7070"

PathOrSource = Union[str, "os.PathLike[str]"]
PathOrBytes = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


class Grid:
    """A coordinator, reached over its HTTP API.

    ``url`` defaults to ``$RUNEGRID_URL`` (else ``http://127.0.0.1:7070``), ``token`` to
    ``$RUNEGRID_TOKEN``. Keyword ``options`` (see :class:`~runegrid.Options`: ``policy``,
    ``replicas``, ``agree``, ``fuel``, ``timeout``, ...) are the defaults of every call made
    through this grid. ``http_timeout`` bounds connecting and each ordinary request (waits for
    results are given their own, longer read timeout).

    Use it as a context manager (``with Grid() as grid:`` or ``async with``), or call
    :meth:`close` / :meth:`aclose`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        http_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.url = (url or os.environ.get("RUNEGRID_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("RUNEGRID_TOKEN")
        self.options = Options().replace(**options)
        self.http_timeout = http_timeout
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: object = None
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Grid({self.url!r})"

    # ------------------------------------------------------------------ life cycle

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

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Grid:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ programs

    def script(self, source_or_path: PathOrSource) -> Script:
        """A Rune script, from its source text or a file (a :class:`~pathlib.Path`, or a
        string naming an existing file). ``.function(name)`` gives a callable."""
        from .calls import Script

        path: Path | None = None
        if isinstance(source_or_path, os.PathLike):
            path = Path(source_or_path)
        elif (
            "\n" not in source_or_path
            and len(source_or_path) < 4096
            and os.path.isfile(source_or_path)
        ):
            path = Path(source_or_path)
        if path is not None:
            return Script(self, path.read_text(encoding="utf-8"), path=path)
        return Script(self, str(source_or_path))

    def wasm(self, path_or_bytes: PathOrBytes, **options: Any) -> WasmProgram:
        """A WASI command module: a path, or the module's bytes (binary ``.wasm`` or WAT
        text; a ``str`` containing ``(module`` is taken as WAT text). It is uploaded on
        first use (or by :meth:`WasmProgram.upload`)."""
        from .calls import WasmProgram

        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            module = bytes(path_or_bytes)
        elif isinstance(path_or_bytes, str) and "(module" in path_or_bytes:
            module = path_or_bytes.encode("utf-8")
        else:
            module = Path(path_or_bytes).read_bytes()
        return WasmProgram(self, module, self.options.replace(**options))

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
            r = self.client.request(
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
            r = await self.aclient.request(
                method, path, content=content, params=params, headers=headers, timeout=timeout
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: {e!r}") from e
        return _answer(r)

    def me(self) -> dict[str, Any]:
        """The account of the token (``GET /v1/me``)."""
        return self.request("GET", "/v1/me")  # type: ignore[no-any-return]

    async def me_async(self) -> dict[str, Any]:
        return await self.request_async("GET", "/v1/me")  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        """Workers with their standing (all for an admin, the account's own otherwise)."""
        return self.request("GET", "/v1/workers")  # type: ignore[no-any-return]

    async def workers_async(self) -> list[dict[str, Any]]:
        return await self.request_async("GET", "/v1/workers")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """The grid's activity (``GET /v1/stats``, needs no token)."""
        return self.request("GET", "/v1/stats")  # type: ignore[no-any-return]

    def jobs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The account's jobs, newest first."""
        params = {"limit": limit} if limit is not None else None
        return self.request("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

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
        body = _job_body(program, tasks, self.options.replace(**options))
        return int(self._post_job(body, None)["job"])

    async def submit_async(
        self, program: str, tasks: Sequence[dict[str, Any]], **options: Any
    ) -> int:
        body = _job_body(program, tasks, self.options.replace(**options))
        return int((await self._post_job_async(body, None))["job"])

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

    def wait(self, job: int, timeout: float | None = None) -> list[TaskResult]:
        """Waits until every task of ``job`` is final and returns the results; raises
        :class:`CallTimeout` (and cancels the job) after ``timeout`` seconds."""
        return self._await_final(job, p.deadline_after(timeout), None, timeout)

    async def wait_async(self, job: int, timeout: float | None = None) -> list[TaskResult]:
        return await self._await_final_async(job, p.deadline_after(timeout), None, timeout)

    def events(
        self, job: int, timeout: float | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """The job's events (``GET /v1/jobs/{id}/events``) as dicts with a ``type``:
        ``progress``, ``stdout``, ``task``, ``corrected``, ``done`` (the last). Stops after
        ``done``, or silently once ``timeout`` seconds have passed."""
        return self._iter_events(job, p.deadline_after(timeout))

    def events_async(
        self, job: int, timeout: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        return self._iter_events_async(job, p.deadline_after(timeout))

    # ------------------------------------------------------------------ chat (LLM)

    def models(self) -> list[ModelInfo]:
        """The models the grid serves (``GET /v1/models``), with whether each is available
        and how many workers can serve it."""
        return parse_models(self.request("GET", "/v1/models"))

    async def models_async(self) -> list[ModelInfo]:
        return parse_models(await self.request_async("GET", "/v1/models"))

    @overload
    def chat(
        self,
        messages: Messages,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[False] = ...,
        **options: Any,
    ) -> ChatReply: ...

    @overload
    def chat(
        self,
        messages: Messages,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[True],
        **options: Any,
    ) -> ChatStream: ...

    def chat(
        self,
        messages: Messages,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stream: bool = False,
        **options: Any,
    ) -> ChatReply | ChatStream:
        """Asks a model (``POST /v1/chat/completions``); returns the verified answer, a
        :class:`~runegrid.ChatReply`.

        ``messages`` is one user message (a string) or a list of ``{"role", "content"}`` dicts
        (roles ``system``, ``user``, ``assistant``). ``max_tokens``, ``temperature`` (0 is
        greedy; the grid's default is 0.2), ``top_p`` and ``seed`` (every replica samples with
        the same seed; the coordinator picks one when absent) are OpenAI's; ``None`` leaves the
        grid's default. Keyword ``options``: ``policy``, ``replicas``, ``agree``,
        ``max_attempts`` (how the answer is verified) and ``timeout`` (seconds; past it
        :class:`~runegrid.CallTimeout` is raised and the job cancelled).

        With ``stream=True`` it returns a :class:`~runegrid.ChatStream` instead: iterate it
        for the text as it is generated (unverified), then ``.reply`` is the verified answer
        (see :class:`~runegrid.ChatStream` for corrections). Errors raise
        :class:`~runegrid.ApiError` (``model_not_found``, ``model_unavailable``,
        ``invalid_request``, ``inference_failed``, ...).
        """
        opts = chat_options(self.options, options)
        body = chat_body(
            messages,
            model=model,
            stream=stream,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            opts=opts,
        )
        if stream:
            return ChatStream(self, body, opts)
        return post_reply(self, body, opts)

    @overload
    async def chat_async(
        self,
        messages: Messages,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[False] = ...,
        **options: Any,
    ) -> ChatReply: ...

    @overload
    async def chat_async(
        self,
        messages: Messages,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[True],
        **options: Any,
    ) -> AsyncChatStream: ...

    async def chat_async(
        self,
        messages: Messages,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stream: bool = False,
        **options: Any,
    ) -> ChatReply | AsyncChatStream:
        """The async form of :meth:`chat`. With ``stream=True`` it returns an
        :class:`~runegrid.AsyncChatStream` (``async for piece in await grid.chat_async(...,
        stream=True)``); the request is sent when the iteration starts."""
        opts = chat_options(self.options, options)
        body = chat_body(
            messages,
            model=model,
            stream=stream,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            opts=opts,
        )
        if stream:
            return AsyncChatStream(self, body, opts)
        return await post_reply_async(self, body, opts)

    @overload
    def generate(
        self,
        prompt: str,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[False] = ...,
        **options: Any,
    ) -> str: ...

    @overload
    def generate(
        self,
        prompt: str,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[True],
        **options: Any,
    ) -> ChatStream: ...

    def generate(
        self,
        prompt: str,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stream: bool = False,
        **options: Any,
    ) -> str | ChatStream:
        """:meth:`chat` with one user message, returning the verified answer's text (with
        ``stream=True``, the :class:`~runegrid.ChatStream`, which yields ``str`` pieces)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
        if stream:
            return self.chat(
                prompt,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                stream=True,
                **options,
            )
        reply: ChatReply = self.chat(
            prompt,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            **options,
        )
        return reply.text

    @overload
    async def generate_async(
        self,
        prompt: str,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[False] = ...,
        **options: Any,
    ) -> str: ...

    @overload
    async def generate_async(
        self,
        prompt: str,
        *,
        model: str = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        stream: Literal[True],
        **options: Any,
    ) -> AsyncChatStream: ...

    async def generate_async(
        self,
        prompt: str,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stream: bool = False,
        **options: Any,
    ) -> str | AsyncChatStream:
        """The async form of :meth:`generate`."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
        if stream:
            return await self.chat_async(
                prompt,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                stream=True,
                **options,
            )
        reply: ChatReply = await self.chat_async(
            prompt,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            **options,
        )
        return reply.text

    # ------------------------------------------------------------------ engine (sync)

    def _post_job(self, body: dict[str, Any], wait: float | None) -> dict[str, Any]:
        params = {"wait": wait} if wait and wait > 0 else None
        read = (wait or 0) + p.READ_SLACK
        return self.request(  # type: ignore[no-any-return]
            "POST", "/v1/jobs", body=body, params=params, read_timeout=read
        )

    def _await_final(
        self,
        job: int,
        deadline: float | None,
        results: list[TaskResult] | None,
        timeout: float | None,
    ) -> list[TaskResult]:
        """Polls (with server-side waits) until every task is final."""
        try:
            while not p.all_final(results):
                w = p.wait_secs(deadline)
                if w <= 0:
                    self._time_out(job, timeout)
                results = self.results(job, wait=w)
        except KeyboardInterrupt:
            self._cancel_quietly(job)
            raise
        assert results is not None
        return results

    def _time_out(self, job: int, timeout: float | None) -> None:
        waiting_for = None
        try:
            waiting_for = self.job(job).get("waiting_for")
        except RunegridError:
            pass
        self._cancel_quietly(job)
        raise CallTimeout(f"job {job} did not finish within {timeout} s", job, waiting_for)

    def _cancel_quietly(self, job: int) -> None:
        try:
            self.request("DELETE", f"/v1/jobs/{int(job)}", read_timeout=5)
        except RunegridError:
            pass

    def _iter_events(
        self, job: int, deadline: float | None
    ) -> Generator[dict[str, Any], None, None]:
        quiet_reopens = 0
        while True:
            left = p.remaining(deadline)
            if left is not None and left <= 0:
                return
            read = p.EVENT_SILENCE if left is None else max(0.05, min(p.EVENT_SILENCE, left))
            got_any = False
            try:
                with self.client.stream(
                    "GET",
                    f"/v1/jobs/{int(job)}/events",
                    timeout=httpx.Timeout(self.http_timeout, read=read),
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

    # ------------------------------------------------------------------ engine (async)

    async def _post_job_async(self, body: dict[str, Any], wait: float | None) -> dict[str, Any]:
        params = {"wait": wait} if wait and wait > 0 else None
        read = (wait or 0) + p.READ_SLACK
        return await self.request_async(  # type: ignore[no-any-return]
            "POST", "/v1/jobs", body=body, params=params, read_timeout=read
        )

    async def _await_final_async(
        self,
        job: int,
        deadline: float | None,
        results: list[TaskResult] | None,
        timeout: float | None,
    ) -> list[TaskResult]:
        try:
            while not p.all_final(results):
                w = p.wait_secs(deadline)
                if w <= 0:
                    await self._time_out_async(job, timeout)
                results = await self.results_async(job, wait=w)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(5, shield=True):
                await self._cancel_quietly_async(job)
            raise
        assert results is not None
        return results

    async def _time_out_async(self, job: int, timeout: float | None) -> None:
        waiting_for = None
        try:
            waiting_for = (await self.job_async(job)).get("waiting_for")
        except RunegridError:
            pass
        await self._cancel_quietly_async(job)
        raise CallTimeout(f"job {job} did not finish within {timeout} s", job, waiting_for)

    async def _cancel_quietly_async(self, job: int) -> None:
        try:
            await self.request_async("DELETE", f"/v1/jobs/{int(job)}", read_timeout=5)
        except RunegridError:
            pass

    async def _iter_events_async(
        self, job: int, deadline: float | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        quiet_reopens = 0
        while True:
            left = p.remaining(deadline)
            if left is not None and left <= 0:
                return
            read = p.EVENT_SILENCE if left is None else max(0.05, min(p.EVENT_SILENCE, left))
            got_any = False
            try:
                async with self.aclient.stream(
                    "GET",
                    f"/v1/jobs/{int(job)}/events",
                    timeout=httpx.Timeout(self.http_timeout, read=read),
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


def _answer(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise api_error(r.status_code, r.content)
    try:
        return r.json()
    except ValueError as e:
        raise ApiError("invalid_response", f"not JSON: {r.text[:200]!r}", r.status_code) from e


def _job_body(program: str, tasks: Sequence[dict[str, Any]], opts: Options) -> dict[str, Any]:
    return {"program": program, "tasks": list(tasks), **opts.job_fields()}
