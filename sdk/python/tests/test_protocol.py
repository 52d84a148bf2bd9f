"""The SDK's own logic, without a grid: parsing, script output, stream following, options,
chat requests and streams (against a coordinator played by a function)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from runegrid import (
    ApiError,
    Cancelled,
    Grid,
    NonZeroExit,
    Options,
    OutOfFuel,
    ProtocolError,
    ScriptError,
    TaskResult,
    Trap,
    Usage,
    VerificationFailed,
)
from runegrid import _protocol as p
from runegrid._sse import SseParser
from runegrid.chat import parse_models
from runegrid.errors import api_error, task_error


def result(**fields: Any) -> TaskResult:
    d: dict[str, Any] = {
        "index": 0,
        "state": "verified",
        "acceptance": "quorum",
        "exit_code": 0,
        "stdout": "",
        "fuel": 10,
        "digest": "0" * 64,
        "attempts": 2,
        "error": None,
        "status": {"kind": "exited", "code": 0},
    }
    d.update(fields)
    return TaskResult.from_json(7, d)


def test_sse_parser() -> None:
    parser = SseParser()
    lines = [
        "event: progress",
        'data: {"type":"progress","counts":{"queued":1}}',
        "",
        ": keep-alive",
        "",
        "event: stdout",
        'data: {"type":"stdout","task":0,"attempt":3,"data":"a\\nb"}',
        "",
    ]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == [
        {"type": "progress", "counts": {"queued": 1}},
        {"type": "stdout", "task": 0, "attempt": 3, "data": "a\nb"},
    ]


def test_task_result_stdout_bytes() -> None:
    r = result(stdout="\ufffd\x00", stdout_base64="/wA=")
    assert r.stdout_bytes == b"\xff\x00"
    assert result(stdout="hé").stdout_bytes == "hé".encode()
    assert result(stdout=None).stdout == ""


def test_task_errors_by_status() -> None:
    assert type(task_error(result(state="failed", status={"kind": "out_of_fuel"}))) is OutOfFuel
    trap = task_error(result(state="failed", status={"kind": "trap", "trap": "unreachable"}))
    assert isinstance(trap, Trap) and trap.trap == "unreachable"
    nz = task_error(result(state="failed", exit_code=2, status={"kind": "exited", "code": 2}))
    assert isinstance(nz, NonZeroExit) and nz.exit_code == 2 and nz.job == 7
    vf = task_error(result(state="failed", status=None, error="no quorum: 2 groups"))
    assert isinstance(vf, VerificationFailed) and "no quorum" in str(vf)
    assert isinstance(task_error(result(state="cancelled", status=None)), Cancelled)


def test_api_error_bodies() -> None:
    e = api_error(401, b'{"error":{"code":"unauthorized","message":"invalid api token"}}')
    assert (e.code, e.message, e.status) == ("unauthorized", "invalid api token", 401)
    e = api_error(422, b"Failed to deserialize the JSON body: unknown field `x`")
    assert isinstance(e, ApiError) and e.code == "invalid_request" and "unknown field" in e.message


def test_script_stdin() -> None:
    payload = json.loads(p.script_stdin("pub fn f(a) { a }", "f", (1, [2], {"k": None})))
    assert payload == {
        "script": "pub fn f(a) { a }",
        "function": "f",
        "args": [1, [2], {"k": None}],
    }
    with pytest.raises(TypeError):
        p.script_stdin("", "f", (object(),))
    with pytest.raises(TypeError):
        p.script_stdin("", "f", (float("nan"),))
    assert p.script_args((1, 2)) == (1, 2)
    assert p.script_args([1, 2]) == ([1, 2],)


@pytest.mark.parametrize(
    "stdout, printed, value",
    [
        ('{"ok":3}\n', "", 3),
        ('{"ok": 3}', "", 3),
        ('hello\nworld\n{"ok":[1,2]}\n', "hello\nworld\n", [1, 2]),
        ('no newline{"ok":null}\n', "no newline", None),
        ('{"a":1}\n{"ok":{"a":1}}\n', '{"a":1}\n', {"a": 1}),
    ],
)
def test_script_outcome_ok(stdout: str, printed: str, value: Any) -> None:
    out = p.script_outcome(result(stdout=stdout))
    assert (out.output, out.value) == (printed, value)


def test_script_outcome_errors() -> None:
    line = json.dumps(
        {"error": {"kind": "compile", "message": "expected expression", "line": 2, "column": 7}}
    )
    failed = {"state": "failed", "exit_code": 1, "status": {"kind": "exited", "code": 1}}
    with pytest.raises(ScriptError) as e:
        p.script_outcome(result(stdout=f"partial\n{line}\n", **failed))
    err = e.value
    assert (err.kind, err.message, err.line, err.column) == ("compile", "expected expression", 2, 7)
    assert "compile error at line 2, column 7: expected expression" in str(err)
    assert err.result.exit_code == 1

    line = json.dumps(
        {"error": {"kind": "runtime", "message": "boom", "line": None, "column": None}}
    )
    with pytest.raises(ScriptError) as e:
        p.script_outcome(result(stdout=line, **failed))
    assert e.value.line is None and str(e.value).endswith("runtime error: boom")

    with pytest.raises(OutOfFuel):
        p.script_outcome(result(stdout="line 1\n", state="failed", status={"kind": "out_of_fuel"}))
    with pytest.raises(NonZeroExit):
        p.script_outcome(result(stdout="crashed\n", **failed))
    with pytest.raises(ProtocolError):
        p.script_outcome(result(stdout="no result line\n"))
    assert p.split_script_output("a\nb\n") == ("a\nb\n", None)


def test_follower_dedups_replicas_and_restarts() -> None:
    f = p.OutputFollower(hold_result_line=False)
    assert f.feed(1, "ab") == "ab"
    assert f.feed(2, "a") == ""  # a replica behind
    assert f.feed(2, "bcd") == "cd"  # ... overtakes
    assert f.feed(1, "c") == ""
    assert f.feed(3, "XX") == ""  # contradicts: ignored from now on
    assert f.feed(3, "cdef") == ""
    assert f.feed(1, "def") == "ef"
    assert f.finish("abcdefgh") == "gh"
    g = p.OutputFollower(hold_result_line=False)
    assert g.feed(1, "abc") == "abc"
    assert g.finish("xyz") == ""  # streamed text is not a prefix of the accepted output


def test_follower_holds_a_scripts_result_line() -> None:
    f = p.OutputFollower(hold_result_line=True)
    assert f.feed(1, "line 0\n") == "line 0\n"
    assert f.feed(1, '{"a":') == ""
    assert f.feed(1, "1}\n") == ""
    assert f.feed(1, "line 1\n") == '{"a":1}\nline 1\n'
    assert f.feed(1, '{"ok":2}\n') == ""
    printed, _ = p.split_script_output(f.text)
    assert f.finish(printed) == ""
    h = p.OutputFollower(hold_result_line=True)
    assert h.feed(1, "partial") == "partial"
    assert h.finish("partial line\n") == " line\n"


def test_wasm_tasks() -> None:
    assert p.wasm_task(["a", 1, 2.5], "in", {"K": 1}) == {
        "args": ["a", "1", "2.5"],
        "stdin": "in",
        "env": {"K": "1"},
    }
    assert p.wasm_task("one") == {"args": ["one"]}
    assert p.wasm_task(stdin=b"bytes") == {"stdin": "bytes"}
    assert p.wasm_task() == {}
    with pytest.raises(ValueError):
        p.wasm_task(stdin=b"\xff")
    assert p.wasm_item(["a", "b"]) == {"args": ["a", "b"]}
    assert p.wasm_item("a") == {"args": ["a"]}
    assert p.wasm_item({"stdin": "x"}) == {"stdin": "x"}
    with pytest.raises(TypeError):
        p.wasm_item({"argv": []})


def test_options() -> None:
    o = Options().replace(replicas=3, agree=2, fuel=10**8, name="n")
    assert o.job_fields() == {"replicas": 3, "agree": 2, "name": "n", "limits": {"fuel": 10**8}}
    assert Options().job_fields() == {}
    with pytest.raises(ValueError):
        Options(policy="majority")
    with pytest.raises(ValueError):
        Options(replicas=0)
    assert Options(scratch_bytes=0).job_fields() == {"limits": {"scratch_bytes": 0}}
    with pytest.raises(ValueError):
        Options(scratch_bytes=-1)
    with pytest.raises(TypeError):
        Options(fuel=True)
    with pytest.raises(TypeError):
        Options().replace(bogus=1)
    with pytest.raises(ValueError):
        Options(timeout=0)


# ---------------------------------------------------------------------------- chat


def chat_grid(answer: Any, status: int = 200, **options: Any) -> tuple[Grid, list[Any]]:
    """A :class:`Grid` whose coordinator is a function: ``answer`` is the JSON of the answer, or
    a list of SSE data strings (a streamed answer). Returns the grid and the bodies it got."""
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if isinstance(answer, list):
            text = "".join(f"data: {d}\n\n" for d in answer)
            return httpx.Response(status, text=text, headers={"content-type": "text/event-stream"})
        return httpx.Response(status, json=answer)

    grid = Grid("http://grid.test", "tok", **options)
    transport = httpx.MockTransport(handler)
    grid._client = httpx.Client(base_url=grid.url, transport=transport)
    grid._aclient = httpx.AsyncClient(base_url=grid.url, transport=transport)
    try:
        grid._aloop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    return grid, seen


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    c = {
        "id": "chatcmpl-5",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "smollm2-135m-instruct",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return json.dumps(c)


def info(state: str, **fields: Any) -> dict[str, Any]:
    return {"runegrid": {"job": 5, "state": state, "attempts": 2, **fields}}


USAGE = {"usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}}


def test_chat_request_body_and_reply() -> None:
    completion = {
        "id": "chatcmpl-5",
        "object": "chat.completion",
        "created": 1,
        "model": "smollm2-135m-instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "stop",
            }
        ],
        **USAGE,
        **info("verified", acceptance="quorum", digest="ab" * 32),
    }
    grid, seen = chat_grid(completion, fuel=10, policy="quorum")
    reply = grid.chat("hello", replicas=3, agree=2, max_tokens=8, temperature=0, seed=4)
    assert seen[0] == {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": False,
        "max_tokens": 8,
        "temperature": 0,
        "seed": 4,
        "runegrid": {"policy": "quorum", "replicas": 3, "agree": 2},
    }
    assert (reply.text, reply.job, reply.acceptance, reply.attempts) == ("Hi.", 5, "quorum", 2)
    assert reply.verified and str(reply) == "Hi."
    assert reply.usage == Usage(40, 3, 43)
    assert grid.generate("hello", model="smollm2") == "Hi."
    assert seen[1]["model"] == "smollm2" and seen[1]["runegrid"] == {"policy": "quorum"}
    with pytest.raises(TypeError, match="fuel"):
        grid.chat("hello", fuel=10)
    with pytest.raises(TypeError):
        grid.chat([{"content": "no role"}])


def test_chat_error_answer() -> None:
    err = {"error": {"code": "model_unavailable", "message": "no weights"}}
    grid, _ = chat_grid(err, status=503)
    with pytest.raises(ApiError) as e:
        grid.chat("hello")
    assert (e.value.code, e.value.status) == ("model_unavailable", 503)
    with pytest.raises(ApiError) as e:
        list(grid.chat("hello", stream=True))
    assert e.value.code == "model_unavailable"


def test_chat_stream() -> None:
    events = [
        chunk("", **info("running")),
        chunk("The"),
        chunk(" end."),
        chunk(**info("unverified", digest="cd" * 32)),
        chunk(finish="stop", **USAGE, **info("verified", acceptance="trusted", digest="cd" * 32)),
        "[DONE]",
    ]
    grid, seen = chat_grid(events)
    stream = grid.chat("hello", stream=True)
    assert stream.state is None and seen == []  # sent when the iteration starts
    assert list(stream) == ["The", " end."]
    assert seen[0]["stream"] is True
    assert stream.state == "verified" and not stream.corrected
    r = stream.reply
    assert (r.text, r.finish_reason, r.acceptance, r.job, r.usage.total_tokens) == (
        "The end.",
        "stop",
        "trusted",
        5,
        43,
    )


def test_chat_stream_corrected() -> None:
    events = [
        chunk("", **info("running")),
        chunk("Lies"),
        chunk(" told."),
        chunk(**info("unverified")),
        chunk(**info("corrected", content="The truth.")),
        chunk(finish="stop", **USAGE, **info("verified", acceptance="quorum")),
        "[DONE]",
    ]
    grid, _ = chat_grid(events)
    stream = grid.chat("hello", stream=True)
    pieces = list(stream)
    assert pieces == ["Lies", " told."]
    assert stream.corrected
    assert stream.text == stream.reply.text == "The truth."
    assert stream.reply.corrected and stream.reply.verified
    assert grid.generate("hello", stream=True).read() == "The truth."


@pytest.mark.anyio
async def test_chat_async() -> None:
    events = [
        chunk("", **info("running")),
        chunk("Lies"),
        chunk(**info("corrected", content="The truth.")),
        chunk(finish="length", **USAGE, **info("verified", acceptance="quorum")),
        "[DONE]",
    ]
    grid, seen = chat_grid(events)
    async with grid:
        stream = await grid.chat_async([{"role": "user", "content": "hi"}], stream=True)
        assert [piece async for piece in stream] == ["Lies"]
        assert stream.corrected and stream.reply.text == "The truth."
        assert stream.reply.finish_reason == "length"
        assert await (await grid.generate_async("hi", stream=True)).read() == "The truth."
    assert seen[0]["messages"] == [{"role": "user", "content": "hi"}]

    failed = [chunk("", **info("running")), json.dumps({"error": {"code": "cancelled"}})]
    grid, _ = chat_grid(failed)
    async with grid:
        with pytest.raises(ApiError) as e:
            await (await grid.chat_async("hi", stream=True)).read()
    assert e.value.code == "cancelled"


def test_chat_stream_failure() -> None:
    error = {
        "error": {"message": "no quorum", "type": "runegrid_error", "code": "inference_failed"},
        **info("failed"),
    }
    grid, _ = chat_grid([chunk("", **info("running")), chunk("Half"), json.dumps(error), "[DONE]"])
    stream = grid.chat("hello", stream=True)
    assert next(stream) == "Half"
    with pytest.raises(ApiError) as e:
        next(stream)
    assert (e.value.code, e.value.message, e.value.status) == ("inference_failed", "no quorum", 502)
    assert stream.state == "failed"
    with pytest.raises(RuntimeError):
        _ = stream.reply

    grid, _ = chat_grid([chunk("", **info("running")), chunk("Cut")])  # no verdict, no [DONE]
    with pytest.raises(ProtocolError, match="without a verified answer"):
        list(grid.chat("hello", stream=True))


def test_parse_models() -> None:
    body = {
        "object": "list",
        "data": [
            {
                "id": "m",
                "object": "model",
                "created": 0,
                "owned_by": "runegrid",
                "runegrid": {
                    "available": False,
                    "blob": "00" * 32,
                    "size": 10,
                    "tier": "medium",
                    "memory_bytes": 20,
                    "workers": 3,
                    "workers_holding": 1,
                    "aliases": ["a"],
                },
            }
        ],
    }
    (m,) = parse_models(body)
    assert (m.id, m.available, m.size, m.workers, m.workers_holding, m.aliases) == (
        "m",
        False,
        10,
        3,
        1,
        ("a",),
    )
    assert m.tier == "medium"
    del body["data"][0]["runegrid"]["tier"]
    assert parse_models(body)[0].tier is None
    with pytest.raises(ProtocolError):
        parse_models({"data": None})
