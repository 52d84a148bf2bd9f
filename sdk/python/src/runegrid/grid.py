"""The connection to a coordinator: :class:`Grid`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, overload

from ._jobs import JobClient
from .calls import Script, WasmProgram
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
from .credits import Credits, JobCost, Price
from .gpu import BufferSpec, Dispatch, GpuKernel, read_shader
from .options import Options

DEFAULT_URL = "http://127.0.0.1:7070"

PathOrSource = Union[str, "os.PathLike[str]"]
PathOrBytes = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


class Grid(JobClient):
    """A coordinator, reached over its HTTP API.

    ``url`` defaults to ``$RUNEGRID_URL`` (else ``http://127.0.0.1:7070``); several
    comma-separated URLs of coordinators sharing a database fail over from one to the next
    (see :class:`runegrid._jobs.JobClient`). ``token`` defaults to
    ``$RUNEGRID_TOKEN``. Keyword ``options`` (see :class:`~runegrid.Options`: ``policy``,
    ``replicas``, ``agree``, ``fuel``, ``timeout``, ...) are the defaults of every call made
    through this grid. ``http_timeout`` bounds connecting and each ordinary request (waits for
    results are given their own, longer read timeout).

    Use it as a context manager (``with Grid() as grid:`` or ``async with``), or call
    :meth:`close` / :meth:`aclose`.

    A grid is a job client (``runegrid._jobs.JobClient``): ``request``, ``upload``,
    ``submit``, ``results``, ``wait``, ``events``, ``job`` and ``cancel`` (each with an
    ``_async`` form) come from there; this class adds programs (:meth:`script`,
    :meth:`wasm`, :meth:`gpu`), the account and worker views, and chat.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        http_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(
            url or os.environ.get("RUNEGRID_URL") or DEFAULT_URL,
            token if token is not None else os.environ.get("RUNEGRID_TOKEN"),
            Options().replace(**options),
            http_timeout,
        )

    def __repr__(self) -> str:
        return f"Grid({','.join(self.urls)!r})"

    # ------------------------------------------------------------------ life cycle

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
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            module = bytes(path_or_bytes)
        elif isinstance(path_or_bytes, str) and "(module" in path_or_bytes:
            module = path_or_bytes.encode("utf-8")
        else:
            module = Path(path_or_bytes).read_bytes()
        return WasmProgram(self, module, self.options.replace(**options))

    def gpu(
        self,
        shader: PathOrSource,
        *,
        buffers: Mapping[str, BufferSpec],
        dispatch: Dispatch | Sequence[Dispatch] = (1, 1, 1),
        entry_point: str = "main",
        loop_budget: int | None = None,
        verify: str | None = None,
        allow_software: bool = False,
        returns: str | None = None,
        **options: Any,
    ) -> GpuKernel:
        """A WGSL compute kernel (its source, or a ``.wgsl`` file: a :class:`~pathlib.Path`,
        or a string naming an existing file), run on the grid's GPUs: a
        :class:`~runegrid.GpuKernel`, called with its input buffers. It is uploaded on first
        use (or by :meth:`GpuKernel.upload <runegrid.GpuKernel.upload>`).

        ``buffers`` declares every buffer the entry point binds, in binding order (the first
        is ``@group(0) @binding(0)``, the next ``@binding(1)``, ...; :func:`runegrid.gpu.input`
        and the other declarations take ``binding=`` and ``group=`` otherwise): name → a
        dtype (``"u32"``, ``"f32"``, ``np.float32``, ...: an input, ``var<storage, read>``),
        ``"out DTYPE[SHAPE]"`` (an output, ``var<storage, read_write>``, zero-filled:
        ``"out u32"`` is one value, ``"out f32[64, 64]"`` a 64×64 array), ``"uniform DTYPE"``
        (``var<uniform>``) or ``"inout DTYPE"`` (a read-write buffer the call gives and gets
        back changed); or :func:`runegrid.gpu.output` and the like.

        ``dispatch``: the workgroup counts ``(x, y, z)`` of the dispatch (an int ``n`` is
        ``(n, 1, 1)``), or a list of them run in order over the same buffers.
        ``entry_point``: the ``@compute`` function. ``loop_budget``: loop iterations each
        invocation may run, over all its loops (past it the task ends
        :class:`~runegrid.OutOfFuel`; default: the coordinator's).

        Of the job: ``verify`` (``"exact"``, the default: replicas return the same bytes;
        ``"homogeneous"``: and run on one class of adapter and driver), ``allow_software``
        (software adapters such as lavapipe or SwiftShader may run it; default: GPUs only).
        ``returns``: ``"bytes"``, ``"numpy"`` or ``"python"`` fixes what outputs come back
        as (default: the form the inputs were given in). Keyword ``options`` (see
        :class:`~runegrid.Options`) are the kernel's call defaults.

        >>> add = grid.gpu(SHADER, buffers={"a": "u32", "b": "u32", "sum": "out u32"})
        >>> add(1, 2)
        3
        """
        return GpuKernel(
            self,
            read_shader(shader),
            buffers,
            dispatch,
            entry_point=entry_point,
            loop_budget=loop_budget,
            verify=verify,
            allow_software=allow_software,
            returns=returns,
            options=self.options.replace(**options),
        )

    # ------------------------------------------------------------------ plain requests

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

    def balance(self) -> Credits:
        """The account's credits: ``balance``, ``held``, ``earned``, ``spent``."""
        return Credits.from_json(self.request("GET", "/v1/account"))

    async def balance_async(self) -> Credits:
        return Credits.from_json(await self.request_async("GET", "/v1/account"))

    def price(self) -> Price:
        """What work costs now (``GET /v1/price``, needs no token)."""
        return Price.from_json(self.request("GET", "/v1/price"))

    async def price_async(self) -> Price:
        return Price.from_json(await self.request_async("GET", "/v1/price"))

    def cost(self, job: int) -> JobCost | None:
        """What a job pays: its price, its hold, what it spent so far (its final cost once
        it finished). ``None`` for a job from before credits."""
        return JobCost.from_json(self.job(job).get("cost"))

    async def cost_async(self, job: int) -> JobCost | None:
        return JobCost.from_json((await self.job_async(job)).get("cost"))

    def jobs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The account's jobs, newest first."""
        params = {"limit": limit} if limit is not None else None
        return self.request("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

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
