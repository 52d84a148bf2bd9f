"""Pure helpers: request bodies, script output, stream following. No I/O here."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ProtocolError, ScriptError, task_error
from .results import ScriptResult, TaskResult

#: Name of the coordinator's built-in Rune script runner.
RUNE_PROGRAM = "rune"
#: Longest a single server-side wait (``?wait=SECS``) is asked to last.
WAIT_CHUNK = 60.0
#: Extra seconds the HTTP read timeout allows beyond a server-side wait.
READ_SLACK = 30.0
#: Longest silence on an event stream before it is reopened (the coordinator sends a
#: keep-alive comment every 15 s).
EVENT_SILENCE = 25.0


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def wait_secs(deadline: float | None) -> float:
    """Seconds the next server-side wait may last (<= 0: the deadline has passed)."""
    left = remaining(deadline)
    return WAIT_CHUNK if left is None else min(left, WAIT_CHUNK)


def all_final(results: Sequence[TaskResult] | None) -> bool:
    return results is not None and all(r.final for r in results)


def parse_results(body: Mapping[str, Any]) -> list[TaskResult]:
    job = int(body["job"])
    out = [TaskResult.from_json(job, t) for t in body.get("tasks", [])]
    out.sort(key=lambda r: r.index)
    return out


# ---------------------------------------------------------------------------- inputs


def script_stdin(source: str, function: str, args: Sequence[Any]) -> str:
    """A script call's stdin: ``{"script", "function", "args"}`` as JSON."""
    try:
        return json.dumps(
            {"script": source, "function": function, "args": list(args)},
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as e:
        raise TypeError(f"arguments of {function}() must be JSON values: {e}") from None


def script_args(item: Any) -> tuple[Any, ...]:
    """One ``map`` item of a script function: a tuple is the arguments, anything else the
    only argument."""
    return item if isinstance(item, tuple) else (item,)


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} must be UTF-8 text (the API carries it as text)") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    raise TypeError(f"{what} must be text, not {type(value).__name__}")


def wasm_task(
    args: Iterable[Any] | str | None = None,
    stdin: str | bytes | None = None,
    env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A task of a WASI module: its arguments (after argv[0]), stdin and environment."""
    task: dict[str, Any] = {}
    if args is not None:
        if isinstance(args, (str, bytes)):
            args = [args]
        task["args"] = [_text(a, "an argument") for a in args]
    if stdin is not None:
        task["stdin"] = _text(stdin, "stdin")
    if env:
        task["env"] = {_text(k, "an env name"): _text(v, "an env value") for k, v in env.items()}
    return task


def wasm_item(item: Any) -> dict[str, Any]:
    """One ``map`` item of a WASI module: a dict with ``args``/``stdin``/``env``, a list or
    tuple of arguments, or a single argument (str or number)."""
    if isinstance(item, Mapping):
        unknown = set(item) - {"args", "stdin", "env"}
        if unknown:
            raise TypeError(f"unknown task field(s) {sorted(unknown)}: use args, stdin, env")
        return wasm_task(item.get("args"), item.get("stdin"), item.get("env"))
    if isinstance(item, (list, tuple)):
        return wasm_task(item)
    return wasm_task([item])


# ---------------------------------------------------------------------------- script output


def _result_line(line: str) -> tuple[int, dict[str, Any]] | None:
    """Where in ``line`` a result object (``{"ok": ...}`` or ``{"error": {...}}``) starts and
    the object, if the line ends with one."""
    start = 0
    for _ in range(64):
        j = line.find("{", start)
        if j < 0:
            return None
        try:
            obj = json.loads(line[j:])
        except ValueError:
            start = j + 1
            continue
        if isinstance(obj, dict) and ("ok" in obj or isinstance(obj.get("error"), Mapping)):
            return j, obj
        start = j + 1
    return None


def split_script_output(stdout: str) -> tuple[str, dict[str, Any] | None]:
    """Splits a script task's stdout into what the script printed and its result object (the
    last line), or ``(stdout, None)`` when it does not end with one."""
    body = stdout[:-1] if stdout.endswith("\n") else stdout
    i = body.rfind("\n")
    found = _result_line(body[i + 1 :])
    if found is None:
        return stdout, None
    j, obj = found
    return stdout[: i + 1 + j], obj


def script_outcome(result: TaskResult) -> ScriptResult:
    """The value of a finished script task, or the exception its failure calls for."""
    status = result.status
    if result.state == "cancelled" or status is None or status.kind != "exited":
        raise task_error(result)
    printed, obj = split_script_output(result.stdout)
    if obj is not None and "ok" in obj and status.code == 0 and result.state == "verified":
        return ScriptResult(value=obj["ok"], output=printed, task=result)
    if obj is not None and isinstance(obj.get("error"), Mapping):
        e = obj["error"]
        line, column = e.get("line"), e.get("column")
        raise ScriptError(
            result,
            kind=str(e.get("kind", "runtime")),
            message=str(e.get("message", "")),
            line=line if isinstance(line, int) else None,
            column=column if isinstance(column, int) else None,
        )
    if result.state != "verified":
        raise task_error(result)
    tail = result.stdout[-200:]
    raise ProtocolError(
        f"job {result.job} task {result.index}: a script task's output must end with a "
        f'{{"ok": ...}} or {{"error": ...}} line; it ended with {tail!r}'
    )


def wasm_outcome(result: TaskResult, check: bool) -> TaskResult:
    if check and not result.ok:
        raise task_error(result)
    return result


# ---------------------------------------------------------------------------- streaming


class OutputFollower:
    """Turns the ``stdout`` events of a task's attempts into one stream of new text.

    Replicas of a task write the same output (execution is deterministic), and an attempt
    that is lost is started again elsewhere from the beginning; so the stream is the longest
    output seen, and an attempt only adds what goes beyond it. An attempt whose output
    contradicts what was already streamed is ignored from then on.

    For a script (``hold_result_line``), a last line that starts with ``{`` is held back
    until more output shows it is not the script's result line.
    """

    def __init__(self, hold_result_line: bool) -> None:
        self.text = ""
        self.emitted = 0
        self._pos: dict[int, int] = {}
        self._ignored: set[int] = set()
        self._hold = hold_result_line

    def feed(self, attempt: int, data: str) -> str:
        if attempt in self._ignored:
            return ""
        pos = self._pos.get(attempt, 0)
        end = pos + len(data)
        seen = self.text[pos:end]
        if data[: len(seen)] != seen:
            self._ignored.add(attempt)
            return ""
        if end > len(self.text):
            self.text += data[len(seen) :]
        self._pos[attempt] = end
        return self._release()

    def _release(self) -> str:
        t = self.text
        safe = len(t)
        if self._hold:
            cut = len(t) - 1 if t.endswith("\n") else len(t)
            start = t.rfind("\n", 0, cut) + 1
            if t.startswith("{", start):
                safe = start
        if safe <= self.emitted:
            return ""
        out = t[self.emitted : safe]
        self.emitted = safe
        return out

    def finish(self, final: str) -> str:
        """What remains of ``final`` (the accepted output, without a script's result line)
        after what was streamed; nothing when the streamed text is not a prefix of it."""
        done = self.text[: self.emitted]
        if not final.startswith(done):
            return ""
        out = final[len(done) :]
        self.text, self.emitted = final, len(final)
        return out
