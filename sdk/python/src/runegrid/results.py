"""Result types: how a task ended, as the coordinator reports it."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Task states that will not change any more (an audit may still correct a result later).
FINAL_STATES = frozenset({"verified", "failed", "cancelled"})


@dataclass(frozen=True)
class ExecStatus:
    """How the agreed execution ended: ``kind`` is ``exited`` (with ``code``), ``out_of_fuel``,
    ``memory_limit``, ``stack_overflow``, ``stdout_limit`` or ``trap`` (with ``trap``, e.g.
    ``unreachable``)."""

    kind: str
    code: int | None = None
    trap: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExecStatus:
        return cls(kind=str(d.get("kind")), code=d.get("code"), trap=d.get("trap"))

    @property
    def success(self) -> bool:
        return self.kind == "exited" and self.code == 0

    def __str__(self) -> str:
        if self.kind == "exited":
            return f"exit:{self.code}"
        if self.kind == "trap":
            return f"trap:{self.trap}"
        return self.kind


@dataclass(frozen=True)
class OutputFile:
    """A file a task left under ``/out``: its ``path`` below ``/out``, ``size`` in bytes and
    ``sha256`` (hex). :meth:`Grid.file <runegrid.Grid.file>` downloads its bytes."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class TaskResult:
    """One task's result (``GET /v1/jobs/{id}/results``, one entry of ``tasks``)."""

    job: int
    index: int
    #: ``verified``, ``failed``, ``cancelled`` (final), or ``unverified``/``queued``/``running``.
    state: str
    #: ``quorum``, ``trusted``, ``unreplicated`` or ``audited``; ``None`` when not accepted.
    acceptance: str | None
    exit_code: int | None
    #: Stdout as text (invalid UTF-8 replaced); :attr:`stdout_bytes` has the exact bytes.
    stdout: str
    stdout_bytes: bytes
    #: Fuel consumed (about one unit per WebAssembly instruction), the same on every worker.
    fuel: int | None
    #: SHA-256 (hex) of status, fuel and stdout: what replicas compare.
    digest: str | None
    #: Attempts dispatched for the task.
    attempts: int
    #: Why the task failed, in words (``None`` on success).
    error: str | None
    status: ExecStatus | None
    #: The files the program left under ``/out``, in path order (compared between replicas
    #: like stdout); :meth:`Grid.file <runegrid.Grid.file>` downloads one.
    files: tuple[OutputFile, ...] = ()
    #: The JSON object as received.
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, job: int, d: Mapping[str, Any]) -> TaskResult:
        text = d.get("stdout")
        b64 = d.get("stdout_base64")
        if b64 is not None:
            exact = base64.b64decode(b64)
        else:
            exact = (text or "").encode("utf-8")
        status = d.get("status")
        return cls(
            job=job,
            index=int(d.get("index", 0)),
            state=str(d.get("state")),
            acceptance=d.get("acceptance"),
            exit_code=d.get("exit_code"),
            stdout=text or "",
            stdout_bytes=exact,
            fuel=d.get("fuel"),
            digest=d.get("digest"),
            attempts=int(d.get("attempts", 0)),
            error=d.get("error"),
            status=ExecStatus.from_json(status) if isinstance(status, Mapping) else None,
            files=tuple(
                OutputFile(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]))
                for f in d.get("files") or ()
            ),
            raw=dict(d),
        )

    @property
    def final(self) -> bool:
        """True once the task will not change state any more."""
        return self.state in FINAL_STATES

    @property
    def ok(self) -> bool:
        """True when the task was verified (accepted, and the program exited 0)."""
        return self.state == "verified"


@dataclass(frozen=True)
class ScriptResult:
    """A script call's outcome: the function's return ``value``, what the script printed
    (``output``, without the final result line) and the underlying ``task``."""

    value: Any
    output: str
    task: TaskResult
