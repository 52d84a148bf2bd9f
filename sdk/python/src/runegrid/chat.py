"""LLM chat on the grid: ``POST /v1/chat/completions`` (OpenAI-compatible) and ``GET /v1/models``.

A chat request is a job of one task (the coordinator's built-in inference program); its answer
is verified like any other result: replicas run with the same seed and must produce the same
tokens. See :meth:`Grid.chat <runegrid.Grid.chat>`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from . import _protocol as p
from ._jobs import JobClient
from ._sse import SseParser
from .credits import credits
from .errors import ApiError, CallTimeout, ConnectionFailed, ProtocolError, api_error
from .options import Options

#: The model a chat uses unless told otherwise.
DEFAULT_MODEL = "smollm2-135m-instruct"

CHAT_PATH = "/v1/chat/completions"

#: The options (of :class:`~runegrid.Options`) a chat call takes.
CHAT_OPTIONS = frozenset({"policy", "replicas", "agree", "max_attempts", "timeout"})

#: A conversation: one user message as a string, or OpenAI-style message dicts
#: (``{"role": "system" | "user" | "assistant", "content": str}``).
Messages = str | Sequence[Mapping[str, Any]]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Usage:
    """Token counts of an answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: What the answer cost the account, in credits (``None`` on a grid that does not charge).
    cost: Decimal | None = None

    @classmethod
    def from_json(cls, d: Any) -> Usage:
        if not isinstance(d, Mapping):
            return cls()
        return cls(
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            completion_tokens=int(d.get("completion_tokens") or 0),
            total_tokens=int(d.get("total_tokens") or 0),
            cost=credits(d["cost"]) if d.get("cost") is not None else None,
        )


@dataclass(frozen=True)
class ChatReply:
    """A chat answer, verified by the grid (``str(reply)`` is its text)."""

    #: The answer.
    text: str
    #: ``stop`` (the model ended its answer) or ``length`` (``max_tokens`` reached).
    finish_reason: str | None
    usage: Usage
    #: The job that computed it.
    job: int
    #: ``verified``.
    state: str
    #: How the answer was accepted: ``quorum``, ``trusted`` or ``unreplicated``.
    acceptance: str | None
    #: SHA-256 (hex) of the accepted result: what replicas compared.
    digest: str | None
    #: Attempts run for it.
    attempts: int
    model: str
    #: The completion's id (``chatcmpl-<job>``).
    id: str
    #: Streamed only: the verified answer differs from the text streamed before it.
    corrected: bool = False
    #: The JSON object as received (for a stream, its last chunk).
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def verified(self) -> bool:
        """True: the grid returns an answer only once it is verified."""
        return self.state == "verified"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_completion(cls, d: Mapping[str, Any]) -> ChatReply:
        """From a ``chat.completion`` object."""
        try:
            choice = d["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise ProtocolError(f"a chat completion without an answer: {d!r:.300}") from e
        info = d.get("runegrid")
        info = info if isinstance(info, Mapping) else {}
        return cls(
            text=str(text),
            finish_reason=finish,
            usage=Usage.from_json(d.get("usage")),
            job=int(info.get("job") or 0),
            state=str(info.get("state") or "verified"),
            acceptance=info.get("acceptance"),
            digest=info.get("digest"),
            attempts=int(info.get("attempts") or 0),
            model=str(d.get("model") or ""),
            id=str(d.get("id") or ""),
            raw=dict(d),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model the grid serves (``GET /v1/models``, one entry of ``data``)."""

    id: str
    #: Whether the coordinator holds the weights (requests are refused until it does).
    available: bool
    #: The weights' blob (SHA-256, hex) and size in bytes.
    blob: str | None
    size: int | None
    #: How much the model asks of a worker: ``small``, ``medium`` or ``large`` (from the memory
    #: a run needs); ``None`` from a grid that does not say.
    tier: str | None
    #: Memory a run of a short request needs (longer contexts need more): workers offering
    #: less never get the model's requests.
    memory_bytes: int | None
    #: Connected workers that can serve it, and those holding its weights already.
    workers: int
    workers_holding: int
    #: Other names the model answers to.
    aliases: tuple[str, ...]
    owned_by: str
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelInfo:
        g = d.get("runegrid")
        g = g if isinstance(g, Mapping) else {}
        return cls(
            id=str(d.get("id")),
            available=bool(g.get("available", True)),
            blob=g.get("blob"),
            size=g.get("size"),
            tier=g.get("tier"),
            memory_bytes=g.get("memory_bytes"),
            workers=int(g.get("workers") or 0),
            workers_holding=int(g.get("workers_holding") or 0),
            aliases=tuple(str(a) for a in g.get("aliases") or ()),
            owned_by=str(d.get("owned_by") or ""),
            raw=dict(d),
        )


def parse_models(body: Any) -> list[ModelInfo]:
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
        raise ProtocolError(f"not a model list: {body!r:.300}")
    return [ModelInfo.from_json(m) for m in body["data"] if isinstance(m, Mapping)]


# ------------------------------------------------------------------------------ requests


def chat_options(defaults: Options, options: Mapping[str, Any]) -> Options:
    """The options of one chat call: ``defaults`` (the grid's) with ``options`` applied; only
    the options a chat uses may be given per call."""
    unknown = sorted(set(options) - CHAT_OPTIONS)
    if unknown:
        many = len(unknown) > 1
        raise TypeError(
            f"option{'s' if many else ''} {', '.join(unknown)} "
            f"{'do' if many else 'does'} not apply to chat "
            f"(chat options: {', '.join(sorted(CHAT_OPTIONS))})"
        )
    return defaults.replace(**options)


def messages_json(messages: Messages) -> list[dict[str, Any]]:
    """``messages`` as the request's list: a string is one user message."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        raise TypeError("messages must be a string or a list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', not {m!r}")
        out.append(dict(m))
    if not out:
        raise ValueError("messages is empty: give at least one message")
    return out


def chat_body(
    messages: Messages,
    *,
    model: str,
    stream: bool,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    opts: Options,
) -> dict[str, Any]:
    """A ``POST /v1/chat/completions`` body."""
    body: dict[str, Any] = {"model": model, "messages": messages_json(messages), "stream": stream}
    for name, value in (
        ("max_tokens", max_tokens),
        ("temperature", temperature),
        ("top_p", top_p),
        ("seed", seed),
    ):
        if value is not None:
            body[name] = value
    grid = {
        f: getattr(opts, f)
        for f in ("policy", "replicas", "agree", "max_attempts")
        if getattr(opts, f) is not None
    }
    if grid:
        body["runegrid"] = grid
    return body


def _timed_out(timeout: float | None, job: int | None) -> CallTimeout:
    what = f"chat job {job}" if job is not None else "the chat request"
    return CallTimeout(f"{what} did not finish within {timeout} s (its job is cancelled)", job)


def reply_timeout(grid: JobClient, opts: Options) -> httpx.Timeout:
    """An answer without streaming comes when it is verified: reads wait up to the call's
    ``timeout`` (for ever without one)."""
    return httpx.Timeout(grid.http_timeout, read=opts.timeout)


def parse_reply(r: httpx.Response) -> ChatReply:
    if r.status_code >= 400:
        raise api_error(r.status_code, r.content)
    try:
        body = r.json()
    except ValueError as e:
        raise ApiError("invalid_response", f"not JSON: {r.text[:200]!r}", r.status_code) from e
    if not isinstance(body, Mapping):
        raise ProtocolError(f"not a chat completion: {body!r:.300}")
    return ChatReply.from_completion(body)


# ------------------------------------------------------------------------------ streams


class _Follower:
    """Reads a streamed answer's chunks (the ``data`` of its events); no I/O."""

    def __init__(self) -> None:
        self.text = ""
        self.job: int | None = None
        self.state: str | None = None
        self.acceptance: str | None = None
        self.digest: str | None = None
        self.attempts = 0
        self.corrected = False
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model = ""
        self.id = ""
        self.done = False
        self.last: Mapping[str, Any] = {}

    def feed(self, data: str) -> str | None:
        """Takes one event's data; returns the text to show, if any. Raises
        :class:`~runegrid.ApiError` for an error event."""
        if data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"a chat stream event that is not JSON: {data[:200]!r}") from e
        if not isinstance(chunk, Mapping):
            raise ProtocolError(f"a chat stream event that is not an object: {data[:200]!r}")
        self.last = chunk
        info = chunk.get("runegrid")
        if isinstance(info, Mapping):
            self._info(info)
        error = chunk.get("error")
        if isinstance(error, Mapping):
            self.state = "failed"
            # The status of the same failure without streaming.
            raise ApiError(
                str(error.get("code") or "inference_failed"), str(error.get("message")), 502
            )
        self.id = str(chunk.get("id") or self.id)
        self.model = str(chunk.get("model") or self.model)
        if chunk.get("usage") is not None:
            self.usage = Usage.from_json(chunk["usage"])
        piece = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping) and delta.get("content"):
                piece += str(delta["content"])
            if choice.get("finish_reason") is not None:
                self.finish_reason = str(choice["finish_reason"])
        if not piece:
            return None
        self.text += piece
        # After a correction the pieces no longer continue what was shown.
        return None if self.corrected else piece

    def _info(self, info: Mapping[str, Any]) -> None:
        if info.get("job") is not None:
            self.job = int(info["job"])
        self.state = str(info.get("state") or self.state)
        self.acceptance = info.get("acceptance", self.acceptance)
        self.digest = info.get("digest", self.digest)
        self.attempts = int(info.get("attempts") or self.attempts)
        if self.state == "corrected":
            self.corrected = True
            self.text = str(info.get("content") or "")

    def reply(self) -> ChatReply:
        """The final answer, once the stream has ended."""
        if self.state != "verified":
            end = "" if self.done else " (the connection ended early)"
            raise ProtocolError(
                f"the chat stream of job {self.job} ended without a verified answer "
                f"(last state: {self.state}){end}"
            )
        return ChatReply(
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            job=self.job or 0,
            state=self.state,
            acceptance=self.acceptance,
            digest=self.digest,
            attempts=self.attempts,
            model=self.model,
            id=self.id,
            corrected=self.corrected,
            raw=dict(self.last),
        )


def _stream_timeout(grid: JobClient, deadline: float | None) -> httpx.Timeout:
    # The coordinator sends a keep-alive every 15 s: longer silence is a dead connection.
    left = p.remaining(deadline)
    read = p.EVENT_SILENCE if left is None else max(0.05, min(p.EVENT_SILENCE, left))
    return httpx.Timeout(grid.http_timeout, read=read)


def _passed(deadline: float | None) -> bool:
    left = p.remaining(deadline)
    return left is not None and left <= 0


class _StreamBase:
    _f: _Follower
    _reply: ChatReply | None

    @property
    def job(self) -> int | None:
        """The job computing the answer (known from the first chunk on)."""
        return self._f.job

    @property
    def state(self) -> str | None:
        """Where the answer stands: ``running`` (tokens streaming from one worker),
        ``unverified`` (a worker finished; replicas pending), ``corrected``, ``verified``,
        ``failed``; ``None`` before the first chunk."""
        return self._f.state

    @property
    def text(self) -> str:
        """The answer so far: what was yielded, or after a correction the verified answer. Once
        the iteration is over, the verified answer."""
        return self._f.text

    @property
    def corrected(self) -> bool:
        """True when the verified answer replaced what had been streamed (see the class)."""
        return self._f.corrected

    @property
    def reply(self) -> ChatReply:
        """The verified :class:`ChatReply`, once the iteration is over."""
        if self._reply is None:
            raise RuntimeError("the stream has not finished (or it failed)")
        return self._reply


class ChatStream(_StreamBase, Iterator[str]):
    """A streamed chat answer: iterate for the text as the model writes it (``str`` pieces).

    The pieces come from one worker as it generates them, before the answer is verified.
    :attr:`state` follows the answer: ``running``, then ``unverified`` (a first worker
    finished; replicas pending), then ``verified`` (the iteration ends). After it,
    :attr:`reply` is the verified :class:`ChatReply` and :attr:`text` its text.

    **Corrections.** If the verified answer differs from what was streamed (the streaming
    worker lied, or its attempt was lost), the grid sends it whole: then :attr:`corrected`
    becomes True, :attr:`text` becomes the verified answer, and *nothing more is yielded*;
    the iteration ends when the answer is verified. So ``"".join(pieces) == stream.text``
    exactly when ``not stream.corrected``; a user interface should redraw from
    :attr:`text` when :attr:`corrected` is set.

    A failure (no answer could be verified) raises :class:`~runegrid.ApiError` (code
    ``inference_failed``) from the iteration; the call's ``timeout`` raises
    :class:`~runegrid.CallTimeout`. Closing the stream early (:meth:`close`, leaving a
    ``with`` block, breaking out of a loop over it and dropping it) hangs up, and the
    coordinator cancels the job.
    """

    def __init__(self, grid: JobClient, body: dict[str, Any], opts: Options) -> None:
        self._grid = grid
        self._body = body
        self._timeout = opts.timeout
        self._gen: Generator[str, None, None] | None = None
        self._f = _Follower()
        self._reply = None

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def _run(self) -> Generator[str, None, None]:
        grid, f = self._grid, self._f
        deadline = p.deadline_after(self._timeout)
        try:
            with grid.stream(
                "POST",
                CHAT_PATH,
                content=p.dumps(self._body),
                headers={"content-type": "application/json"},
                timeout=_stream_timeout(grid, deadline),
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise api_error(r.status_code, r.content)
                parser = SseParser()
                for line in r.iter_lines():
                    event = parser.feed_raw(line)
                    if event is not None:
                        piece = f.feed(event[1])
                        if piece:
                            yield piece
                        if f.done:
                            break
                    if _passed(deadline):
                        raise _timed_out(self._timeout, f.job)
        except httpx.ReadTimeout as e:
            if _passed(deadline):
                raise _timed_out(self._timeout, f.job) from e
            raise ConnectionFailed(f"the chat stream of job {f.job} went silent") from e
        except httpx.TransportError as e:
            raise ConnectionFailed(f"POST {grid.url}{CHAT_PATH}: {e!r}") from e
        self._reply = f.reply()

    def read(self) -> str:
        """Consumes the rest of the stream; returns the verified answer's text."""
        for _ in self:
            pass
        return self.reply.text

    def close(self) -> None:
        """Hangs up (the coordinator cancels the job if its answer is not final)."""
        if self._gen is not None:
            self._gen.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChatStream(_StreamBase, AsyncIterator[str]):
    """The async form of :class:`ChatStream`: ``async for piece in stream``."""

    def __init__(self, grid: JobClient, body: dict[str, Any], opts: Options) -> None:
        self._grid = grid
        self._body = body
        self._timeout = opts.timeout
        self._gen: AsyncGenerator[str, None] | None = None
        self._f = _Follower()
        self._reply = None

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> str:
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def _run(self) -> AsyncGenerator[str, None]:
        grid, f = self._grid, self._f
        deadline = p.deadline_after(self._timeout)
        try:
            async with grid.stream_async(
                "POST",
                CHAT_PATH,
                content=p.dumps(self._body),
                headers={"content-type": "application/json"},
                timeout=_stream_timeout(grid, deadline),
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise api_error(r.status_code, r.content)
                parser = SseParser()
                async for line in r.aiter_lines():
                    event = parser.feed_raw(line)
                    if event is not None:
                        piece = f.feed(event[1])
                        if piece:
                            yield piece
                        if f.done:
                            break
                    if _passed(deadline):
                        raise _timed_out(self._timeout, f.job)
        except httpx.ReadTimeout as e:
            if _passed(deadline):
                raise _timed_out(self._timeout, f.job) from e
            raise ConnectionFailed(f"the chat stream of job {f.job} went silent") from e
        except httpx.TransportError as e:
            raise ConnectionFailed(f"POST {grid.url}{CHAT_PATH}: {e!r}") from e
        self._reply = f.reply()

    async def read(self) -> str:
        """Consumes the rest of the stream; returns the verified answer's text."""
        async for _ in self:
            pass
        return self.reply.text

    async def aclose(self) -> None:
        """Hangs up (the coordinator cancels the job if its answer is not final)."""
        if self._gen is not None:
            await self._gen.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ------------------------------------------------------------------------------ calls


def post_reply(grid: JobClient, body: dict[str, Any], opts: Options) -> ChatReply:
    try:
        r = grid.send(
            "POST",
            CHAT_PATH,
            content=p.dumps(body),
            headers={"content-type": "application/json"},
            timeout=reply_timeout(grid, opts),
        )
    except httpx.ReadTimeout as e:
        raise _timed_out(opts.timeout, None) from e
    except httpx.TransportError as e:
        raise ConnectionFailed(f"POST {grid.url}{CHAT_PATH}: {e!r}") from e
    return parse_reply(r)


async def post_reply_async(grid: JobClient, body: dict[str, Any], opts: Options) -> ChatReply:
    try:
        r = await grid.send_async(
            "POST",
            CHAT_PATH,
            content=p.dumps(body),
            headers={"content-type": "application/json"},
            timeout=reply_timeout(grid, opts),
        )
    except httpx.ReadTimeout as e:
        raise _timed_out(opts.timeout, None) from e
    except httpx.TransportError as e:
        raise ConnectionFailed(f"POST {grid.url}{CHAT_PATH}: {e!r}") from e
    return parse_reply(r)
