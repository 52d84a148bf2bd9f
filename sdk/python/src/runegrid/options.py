"""Per-call options: verification policy, limits and client-side behaviour."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

POLICIES = ("adaptive", "quorum", "none")

LIMIT_FIELDS = (
    "fuel",
    "memory_bytes",
    "wall_time_ms",
    "stdout_bytes",
    "scratch_bytes",
    "output_bytes",
)
_INT_FIELDS = ("replicas", "agree", "max_attempts", *LIMIT_FIELDS)
#: Limits that may be 0 (the others must be positive).
_ZERO_ALLOWED = ("stdout_bytes", "scratch_bytes", "output_bytes")


@dataclass(frozen=True)
class Options:
    """What a call asks for. ``None`` leaves the coordinator's default.

    Verification (see the coordinator's README, *Trust*):

    - ``policy``: ``"adaptive"`` (default without replicas/agree: a trusted worker's result is
      accepted alone, with spot checks; others are replicated), ``"quorum"`` (default when
      ``replicas`` or ``agree`` is given: always ``agree`` of ``replicas``) or ``"none"`` (one
      attempt, accepted as reported).
    - ``replicas``, ``agree``, ``max_attempts``.

    Repeatability:

    - ``seed``: where every task's random stream starts (``0 <= seed < 2**53``). Without it
      each task gets a fresh seed; with it, a task with the same inputs as one verified before
      is answered at once from the result cache (``acceptance == "cached"``, nothing paid).
    - ``cache``: ``False`` never answers from the result cache nor keeps results there.

    Limits per attempt: ``fuel`` (about one unit per WebAssembly instruction; default 10^10),
    ``memory_bytes`` (256 MiB), ``wall_time_ms`` (60 s), ``stdout_bytes`` (1 MiB),
    ``scratch_bytes`` (64 MiB, at most 4 GiB): what the task may store in its writable in-memory
    file system (``/``, with empty ``/tmp`` and ``/out``; blobs stay read-only under ``/blobs``;
    discarded after every attempt). Each file or directory created costs 64 bytes plus its
    name's length and every file its size; an operation past the limit fails with ENOSPC
    without stopping the task. ``0``: no writable file system at all. ``output_bytes``
    (16 MiB, at most 64 MiB): the most the files left under ``/out`` may add up to; they come
    back with the result (:attr:`~runegrid.TaskResult.files`), and past it the task ends
    ``output_limit``.

    Client side:

    - ``name``: the job's name.
    - ``timeout``: seconds the whole call may take; past it the job is cancelled and
      :class:`~runegrid.CallTimeout` raised. ``None`` waits for ever.
    - ``progress``: ``map`` shows a progress bar (tqdm, on stderr); ``None`` shows one when
      stderr is a terminal.
    - ``check``: raise :class:`~runegrid.TaskError` for a task that did not succeed (default
      ``True``); with ``False`` a WASI call returns the :class:`~runegrid.TaskResult` anyway.
    """

    policy: str | None = None
    replicas: int | None = None
    agree: int | None = None
    max_attempts: int | None = None
    fuel: int | None = None
    memory_bytes: int | None = None
    wall_time_ms: int | None = None
    stdout_bytes: int | None = None
    scratch_bytes: int | None = None
    output_bytes: int | None = None
    seed: int | None = None
    cache: bool | None = None
    name: str | None = None
    timeout: float | None = None
    progress: bool | None = None
    check: bool = True

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        for f in _INT_FIELDS:
            v = getattr(self, f)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{f} must be an int, not {type(v).__name__}")
            if f in _ZERO_ALLOWED:
                if v < 0:
                    raise ValueError(f"{f} must be 0 or more, not {v}")
            elif v < 1:
                raise ValueError(f"{f} must be positive, not {v}")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise TypeError(f"seed must be an int, not {type(self.seed).__name__}")
            if not 0 <= self.seed < 2**53:
                raise ValueError(f"seed must be in [0, 2**53), not {self.seed}")
        if self.cache is not None and not isinstance(self.cache, bool):
            raise TypeError("cache must be True or False")
        if self.timeout is not None and not (self.timeout > 0):
            raise ValueError(f"timeout must be positive seconds, not {self.timeout!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError("name must be a string")

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` applied; unknown names raise :class:`TypeError`."""
        if not changes:
            return self
        unknown = sorted(set(changes) - OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(options: {', '.join(sorted(OPTION_NAMES))})"
            )
        return dataclasses.replace(self, **changes)

    def job_fields(self) -> dict[str, Any]:
        """The fields of a ``POST /v1/jobs`` body these options set."""
        out: dict[str, Any] = {}
        for f in ("policy", "replicas", "agree", "max_attempts", "name", "seed", "cache"):
            v = getattr(self, f)
            if v is not None:
                out[f] = v
        limits = {f: getattr(self, f) for f in LIMIT_FIELDS if getattr(self, f) is not None}
        if limits:
            out["limits"] = limits
        return out


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Options))
