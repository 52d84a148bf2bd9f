"""Exceptions. Everything the SDK raises on purpose derives from :class:`RunegridError`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .results import ExecStatus, TaskResult


class RunegridError(Exception):
    """Base class of runegrid's exceptions."""


class ApiError(RunegridError):
    """The coordinator answered with an HTTP error.

    ``code`` is the coordinator's stable error code (``unauthorized``, ``forbidden``,
    ``not_found``, ``invalid_module``, ``forbidden_import``, ``invalid_kernel``,
    ``invalid_limits``, ``invalid_policy``, ``invalid_job``, ``invalid_gpu``,
    ``unknown_program``, ...; ``invalid_request`` for a
    body the coordinator could not parse; for chat ``model_not_found``, ``model_unavailable``,
    ``inference_failed``), ``message`` its explanation, ``status`` the HTTP status (502 for a
    chat stream's failure reported in the stream).
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.code = code
        self.message = message
        self.status = status


class InsufficientCredits(ApiError):
    """The account cannot cover a job's worst case (HTTP 402 ``insufficient_credits``):
    nothing was submitted. The message says how much was needed and how much is available;
    ask an admin for a grant (``runegrid credits grant``), or lower the job's ``fuel`` limit."""


class InvalidKernel(ApiError):
    """The coordinator refused a GPU kernel (HTTP 400 ``invalid_kernel``): WGSL that does not
    parse or validate, bindings that do not match the declared buffers, an entry point that is
    not there, sizes or dispatches past the limits. ``message`` is the coordinator's
    explanation (for WGSL, the compiler's diagnostic showing the line); ``line`` and
    ``column`` locate a WGSL error in the shader when the message says where (else ``None``).
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message, status)
        where = re.search(r"wgsl:(\d+):(\d+)", message)
        self.line: int | None = int(where.group(1)) if where else None
        self.column: int | None = int(where.group(2)) if where else None


class ConnectionFailed(RunegridError):
    """The coordinator could not be reached."""


class ProtocolError(RunegridError):
    """An answer the SDK cannot make sense of (e.g. a script task whose output does not end
    with its result line)."""


class CallTimeout(RunegridError, TimeoutError):
    """A call's ``timeout`` ran out before its job finished. The job was cancelled.

    ``waiting_for`` is the coordinator's explanation of what the job was waiting for, when it
    had one (e.g. too few workers for the quorum asked for).
    """

    def __init__(self, message: str, job: int | None = None, waiting_for: str | None = None):
        if waiting_for:
            message = f"{message} (the coordinator says: {waiting_for})"
        super().__init__(message)
        self.job = job
        self.waiting_for = waiting_for


class TaskError(RunegridError):
    """A task ended without success. ``result`` is the task's :class:`TaskResult`; its fields
    are also available on the exception (``state``, ``status``, ``exit_code``, ``stdout``,
    ``error``, ...)."""

    def __init__(self, result: TaskResult, message: str | None = None) -> None:
        self.result = result
        if message is None:
            message = result.error or f"task ended in state {result.state}"
        super().__init__(f"job {result.job} task {result.index}: {message}")

    job = property(lambda self: self.result.job)
    index = property(lambda self: self.result.index)
    state = property(lambda self: self.result.state)
    acceptance = property(lambda self: self.result.acceptance)
    exit_code = property(lambda self: self.result.exit_code)
    stdout = property(lambda self: self.result.stdout)
    stdout_bytes = property(lambda self: self.result.stdout_bytes)
    fuel = property(lambda self: self.result.fuel)
    digest = property(lambda self: self.result.digest)
    attempts = property(lambda self: self.result.attempts)
    error = property(lambda self: self.result.error)
    status = property(lambda self: self.result.status)


class NonZeroExit(TaskError):
    """The program exited with a non-zero code (``exit_code``)."""


class OutOfFuel(TaskError):
    """The task used up its fuel limit (a loop that never ends ends here); for a GPU kernel,
    an invocation ran past the kernel's loop budget."""


class MemoryLimit(TaskError):
    """The program asked for more memory than its limit allows."""


class StackOverflow(TaskError):
    """The call depth limit was reached."""


class StdoutLimit(TaskError):
    """The program wrote more to stdout than its limit allows."""


class OutputLimit(TaskError):
    """The files the program left under ``/out`` add up to more than ``output_bytes``."""


class Trap(TaskError):
    """The module trapped; ``trap`` is the kind (``unreachable``, ``memory_out_of_bounds``,
    ``integer_division_by_zero``, ...)."""

    @property
    def trap(self) -> str | None:
        s = self.result.status
        return s.trap if s else None


class VerificationFailed(TaskError):
    """No result could be accepted: replicas disagreed until the job's ``max_attempts`` ran
    out, or attempts kept being lost. ``error`` says which."""


class Cancelled(TaskError):
    """The task was cancelled (its job was cancelled)."""


class ScriptError(TaskError):
    """A Rune script failed: ``kind`` is ``compile``, ``runtime``, ``input`` (the arguments
    could not be given to the function) or ``value`` (its return value has no JSON form);
    ``line`` and ``column`` locate the error in the script when known."""

    def __init__(
        self,
        result: TaskResult,
        kind: str,
        message: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.kind = kind
        self.script_message = message
        self.line = line
        self.column = column
        where = ""
        if line is not None:
            where = f" at line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(result, f"{kind} error{where}: {message}")

    @property
    def message(self) -> str:
        """The script error's message (without the location)."""
        return self.script_message


_BY_STATUS: dict[str, type[TaskError]] = {
    "out_of_fuel": OutOfFuel,
    "memory_limit": MemoryLimit,
    "stack_overflow": StackOverflow,
    "stdout_limit": StdoutLimit,
    "output_limit": OutputLimit,
    "trap": Trap,
}


def task_error(result: TaskResult) -> TaskError:
    """The exception for a task that did not succeed."""
    if result.state == "cancelled":
        return Cancelled(result, result.error or "cancelled")
    status: ExecStatus | None = result.status
    if status is None:
        return VerificationFailed(result)
    if status.kind == "exited":
        return NonZeroExit(result)
    return _BY_STATUS.get(status.kind, TaskError)(result)


def api_error(status: int, body: bytes) -> ApiError:
    """Builds an :class:`ApiError` from an error answer: ``{"error": {"code", "message"}}``,
    or plain text (a request the coordinator's framework rejected before reading it)."""
    import json

    detail: Mapping[str, Any] | None = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), Mapping):
            detail = parsed["error"]
    except ValueError:
        pass
    if detail is not None:
        code, message = str(detail.get("code")), str(detail.get("message"))
        if code == "insufficient_credits":
            return InsufficientCredits(code, message, status)
        if code == "invalid_kernel":
            return InvalidKernel(code, message, status)
        return ApiError(code, message, status)
    text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status)
    if code is None:
        code = "invalid_request" if 400 <= status < 500 else "internal"
    return ApiError(code, text, status)
