"""Callables: Rune script functions and WASI modules, with their call forms (GPU kernels, in
``gpu.py``, share the engine of :class:`_Callable`)."""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any, TypeVar

import anyio

from . import _jobs
from . import _protocol as p
from ._jobs import JobClient
from .errors import ApiError, TaskError
from .options import Options
from .results import ScriptResult, TaskResult

C = TypeVar("C", bound="_Callable")

_UNSET: Any = object()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _finished(counts: Mapping[str, Any]) -> int:
    return sum(int(counts.get(k, 0)) for k in ("verified", "failed", "cancelled"))


class _Callable:
    """What script functions, WASI modules and GPU kernels share: options, submission,
    waiting, fan-out, progress and streaming."""

    _hold_result_line = False

    def __init__(self, grid: JobClient, options: Options) -> None:
        self._grid = grid
        self._opts = options

    @property
    def grid(self) -> JobClient:
        """The :class:`~runegrid.Grid` it runs on (typed as the job client the grid is, which
        is all a callable uses)."""
        return self._grid

    @property
    def opts(self) -> Options:
        """The options every call of this object uses (a call's own keywords override
        them)."""
        return self._opts

    def options(self: C, **changes: Any) -> C:
        """A copy of this callable with options changed (e.g. ``replicas=3, agree=2,
        fuel=10**8``); see :class:`~runegrid.Options`."""
        new = copy.copy(self)
        new._opts = self._opts.replace(**changes)
        return new

    # -- what each kind provides

    def _program(self) -> str:
        raise NotImplementedError

    async def _program_async(self) -> str:
        raise NotImplementedError

    def _forget_upload(self) -> bool:
        """Forgets that the program was uploaded (it was not found); True when uploading it
        again may help."""
        return False

    def _job_fields(self) -> dict[str, Any]:
        """Fields of the job's body that this kind adds (a GPU kernel's ``gpu``)."""
        return {}

    def _outcome(self, result: TaskResult, opts: Options) -> Any:
        raise NotImplementedError

    def _printed(self, result: TaskResult) -> str:
        return result.stdout

    def _item_task(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _label(self) -> str:
        raise NotImplementedError

    # -- engine (sync)

    def _submit(
        self, tasks: list[dict[str, Any]], opts: Options, wait: float | None
    ) -> dict[str, Any]:
        body = {
            "program": self._program(),
            "tasks": tasks,
            **opts.job_fields(),
            **self._job_fields(),
        }
        try:
            return _jobs.post_job(self._grid, body, wait)
        except ApiError as e:
            if e.code != "unknown_program" or not self._forget_upload():
                raise
            body["program"] = self._program()
            return _jobs.post_job(self._grid, body, wait)

    def _run(
        self, tasks: list[dict[str, Any]], opts: Options, progress: bool = False
    ) -> list[TaskResult]:
        deadline = p.deadline_after(opts.timeout)
        first = None
        if progress:
            job = int(self._submit(tasks, opts, None)["job"])
            self._show_progress(job, len(tasks), deadline)
        else:
            answer = self._submit(tasks, opts, p.wait_secs(deadline))
            job = int(answer["job"])
            if answer.get("results"):
                first = p.parse_results(answer["results"])
        return _jobs.await_final(self._grid, job, deadline, first, opts.timeout)

    def _show_progress(self, job: int, total: int, deadline: float | None) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

        bar = tqdm(total=total, desc=self._label(), unit="task")
        try:
            with closing(_jobs.iter_events(self._grid, job, deadline)) as events:
                for ev in events:
                    counts = ev.get("counts")
                    if isinstance(counts, Mapping):
                        n = _finished(counts)
                        if n > bar.n:
                            bar.update(n - bar.n)
                    if ev.get("type") == "done":
                        break
        except KeyboardInterrupt:
            _jobs.cancel_quietly(self._grid, job)
            raise
        finally:
            bar.close()

    def _call(self, task: dict[str, Any], options: dict[str, Any]) -> Any:
        opts = self._opts.replace(**options)
        return self._outcome(self._run([task], opts)[0], opts)

    def _map(
        self, items: Iterable[Any], return_exceptions: bool, options: dict[str, Any]
    ) -> list[Any]:
        opts = self._opts.replace(**options)
        tasks = [self._item_task(i) for i in items]
        if not tasks:
            return []
        progress = opts.progress if opts.progress is not None else _stderr_is_terminal()
        results = self._run(tasks, opts, progress)
        return self._outcomes(results, opts, return_exceptions)

    def _outcomes(
        self, results: list[TaskResult], opts: Options, return_exceptions: bool
    ) -> list[Any]:
        out: list[Any] = []
        for r in results:
            try:
                out.append(self._outcome(r, opts))
            except TaskError as e:
                if not return_exceptions:
                    raise
                out.append(e)
        return out

    # -- engine (async)

    async def _submit_async(
        self, tasks: list[dict[str, Any]], opts: Options, wait: float | None
    ) -> dict[str, Any]:
        body = {
            "program": await self._program_async(),
            "tasks": tasks,
            **opts.job_fields(),
            **self._job_fields(),
        }
        try:
            return await _jobs.post_job_async(self._grid, body, wait)
        except ApiError as e:
            if e.code != "unknown_program" or not self._forget_upload():
                raise
            body["program"] = await self._program_async()
            return await _jobs.post_job_async(self._grid, body, wait)

    async def _run_async(
        self, tasks: list[dict[str, Any]], opts: Options, progress: bool = False
    ) -> list[TaskResult]:
        deadline = p.deadline_after(opts.timeout)
        first = None
        if progress:
            job = int((await self._submit_async(tasks, opts, None))["job"])
            await self._show_progress_async(job, len(tasks), deadline)
        else:
            answer = await self._submit_async(tasks, opts, p.wait_secs(deadline))
            job = int(answer["job"])
            if answer.get("results"):
                first = p.parse_results(answer["results"])
        return await _jobs.await_final_async(self._grid, job, deadline, first, opts.timeout)

    async def _show_progress_async(self, job: int, total: int, deadline: float | None) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

        bar = tqdm(total=total, desc=self._label(), unit="task")
        try:
            async with aclosing(_jobs.iter_events_async(self._grid, job, deadline)) as events:
                async for ev in events:
                    counts = ev.get("counts")
                    if isinstance(counts, Mapping):
                        n = _finished(counts)
                        if n > bar.n:
                            bar.update(n - bar.n)
                    if ev.get("type") == "done":
                        break
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(5, shield=True):
                await _jobs.cancel_quietly_async(self._grid, job)
            raise
        finally:
            bar.close()

    async def _call_async(self, task: dict[str, Any], options: dict[str, Any]) -> Any:
        opts = self._opts.replace(**options)
        return self._outcome((await self._run_async([task], opts))[0], opts)

    async def _map_async(
        self, items: Iterable[Any], return_exceptions: bool, options: dict[str, Any]
    ) -> list[Any]:
        opts = self._opts.replace(**options)
        tasks = [self._item_task(i) for i in items]
        if not tasks:
            return []
        progress = opts.progress if opts.progress is not None else _stderr_is_terminal()
        results = await self._run_async(tasks, opts, progress)
        return self._outcomes(results, opts, return_exceptions)


class OutputStream(Iterator[str]):
    """A call whose stdout is read as it is written: iterate for the chunks (text).

    Chunks come from the ``stdout`` events of the job's stream, as workers write them, so they
    are *unverified*; replicas' identical output is shown once. Once the task is final, what
    the stream missed (output written before it was opened, or lost) is yielded from the
    accepted result, so that the chunks add up to the accepted output (unless unverified
    output contradicted it). Then :attr:`result` is the :class:`~runegrid.TaskResult` and
    :attr:`value` the call's value; a failed task raises its :class:`~runegrid.TaskError` at
    the end of the iteration (after its output).

    For a script call the chunks are what the script printed: its final result line is not
    part of them (a last line starting with ``{`` is held back until more output follows).
    """

    def __init__(self, owner: _Callable, task: dict[str, Any], opts: Options) -> None:
        self._owner = owner
        self._task = task
        self._opts = opts
        self._gen: Generator[str, None, None] | None = None
        self._value: Any = _UNSET
        #: The job's id, once submitted (at the first ``next``).
        self.job: int | None = None
        #: The task's final result, once the iteration is over.
        self.result: TaskResult | None = None

    def __iter__(self) -> OutputStream:
        return self

    def __next__(self) -> str:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def _run(self) -> Generator[str, None, None]:
        owner, opts = self._owner, self._opts
        grid = owner._grid
        deadline = p.deadline_after(opts.timeout)
        job = int(owner._submit([self._task], opts, None)["job"])
        self.job = job
        follower = p.OutputFollower(owner._hold_result_line)
        try:
            with closing(_jobs.iter_events(grid, job, deadline)) as events:
                for ev in events:
                    kind = ev.get("type")
                    if kind == "stdout" and ev.get("task") == 0:
                        out = follower.feed(int(ev.get("attempt", 0)), str(ev.get("data", "")))
                        if out:
                            yield out
                    elif kind == "done":
                        break
        except KeyboardInterrupt:
            _jobs.cancel_quietly(grid, job)
            raise
        self.result = _jobs.await_final(grid, job, deadline, None, opts.timeout)[0]
        rest = follower.finish(owner._printed(self.result))
        if rest:
            yield rest
        self._value = owner._outcome(self.result, opts)

    @property
    def value(self) -> Any:
        """The call's value (a script function's return value; a WASI module's
        :class:`~runegrid.TaskResult`), once the iteration is over."""
        if self._value is _UNSET:
            raise RuntimeError("the stream has not finished (or its task failed)")
        return self._value

    def read(self) -> str:
        """Consumes the rest of the stream; returns its text."""
        return "".join(self)

    def cancel(self) -> None:
        """Cancels the job (if it was submitted)."""
        if self.job is not None:
            self._owner._grid.cancel(self.job)

    def close(self) -> None:
        """Stops following the output (the job goes on)."""
        if self._gen is not None:
            self._gen.close()

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOutputStream(AsyncIterator[str]):
    """The async form of :class:`OutputStream`: ``async for chunk in stream``."""

    def __init__(self, owner: _Callable, task: dict[str, Any], opts: Options) -> None:
        self._owner = owner
        self._task = task
        self._opts = opts
        self._gen: AsyncGenerator[str, None] | None = None
        self._value: Any = _UNSET
        self.job: int | None = None
        self.result: TaskResult | None = None

    def __aiter__(self) -> AsyncOutputStream:
        return self

    async def __anext__(self) -> str:
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def _run(self) -> AsyncGenerator[str, None]:
        owner, opts = self._owner, self._opts
        grid = owner._grid
        deadline = p.deadline_after(opts.timeout)
        job = int((await owner._submit_async([self._task], opts, None))["job"])
        self.job = job
        follower = p.OutputFollower(owner._hold_result_line)
        async with aclosing(_jobs.iter_events_async(grid, job, deadline)) as events:
            async for ev in events:
                kind = ev.get("type")
                if kind == "stdout" and ev.get("task") == 0:
                    out = follower.feed(int(ev.get("attempt", 0)), str(ev.get("data", "")))
                    if out:
                        yield out
                elif kind == "done":
                    break
        self.result = (await _jobs.await_final_async(grid, job, deadline, None, opts.timeout))[0]
        rest = follower.finish(owner._printed(self.result))
        if rest:
            yield rest
        self._value = owner._outcome(self.result, opts)

    @property
    def value(self) -> Any:
        if self._value is _UNSET:
            raise RuntimeError("the stream has not finished (or its task failed)")
        return self._value

    async def read(self) -> str:
        return "".join([chunk async for chunk in self])

    async def cancel(self) -> None:
        if self.job is not None:
            await self._owner._grid.cancel_async(self.job)

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()

    async def __aenter__(self) -> AsyncOutputStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ------------------------------------------------------------------------- Rune scripts


class Script:
    """A Rune script's source; :meth:`function` makes one of its functions callable."""

    def __init__(self, grid: JobClient, source: str, path: Path | None = None) -> None:
        #: The :class:`~runegrid.Grid` it runs on.
        self.grid = grid
        self.source = source
        self.path = path

    def function(self, name: str, **options: Any) -> ScriptFunction:
        """The script's function ``name`` (``pub fn name(...)``), as a callable."""
        return ScriptFunction(self, name, self.grid.options.replace(**options))

    def __repr__(self) -> str:
        where = str(self.path) if self.path else f"{len(self.source)} characters"
        return f"Script({where})"


class ScriptFunction(_Callable):
    """A function of a Rune script, run on the grid (program ``rune``).

    - ``f(*args)`` blocks and returns the function's value (arguments and value are JSON);
    - ``await f.remote(*args)``: the same, async;
    - ``f.call(*args)`` / ``await f.call_async(*args)``: a :class:`~runegrid.ScriptResult`
      (value, printed output, task result);
    - ``f.map(items)`` / ``await f.map_async(items)``: one job, one task per item (a tuple is
      the arguments, anything else the only argument), values in order;
    - ``f.stream(*args)`` / ``f.stream_async(*args)``: what the script prints, as it prints it.

    Keyword arguments of any call are options (``f(1, 2, replicas=3)``); :meth:`options`
    makes a callable with other defaults.
    """

    _hold_result_line = True

    def __init__(self, script: Script, name: str, options: Options) -> None:
        super().__init__(script.grid, options)
        self.script = script
        self.name = name

    def __repr__(self) -> str:
        return f"ScriptFunction({self.name!r}, {self.script!r})"

    def _program(self) -> str:
        return p.RUNE_PROGRAM

    async def _program_async(self) -> str:
        return p.RUNE_PROGRAM

    def _label(self) -> str:
        return f"{self.name}()"

    def _task_for(self, args: tuple[Any, ...]) -> dict[str, Any]:
        return {"stdin": p.script_stdin(self.script.source, self.name, args)}

    def _item_task(self, item: Any) -> dict[str, Any]:
        return self._task_for(p.script_args(item))

    def _outcome(self, result: TaskResult, opts: Options) -> Any:
        return p.script_outcome(result).value

    def _printed(self, result: TaskResult) -> str:
        return p.split_script_output(result.stdout)[0]

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self._call(self._task_for(args), options)

    def call(self, *args: Any, **options: Any) -> ScriptResult:
        opts = self._opts.replace(**options)
        return p.script_outcome(self._run([self._task_for(args)], opts)[0])

    async def remote(self, *args: Any, **options: Any) -> Any:
        return await self._call_async(self._task_for(args), options)

    async def call_async(self, *args: Any, **options: Any) -> ScriptResult:
        opts = self._opts.replace(**options)
        return p.script_outcome((await self._run_async([self._task_for(args)], opts))[0])

    def map(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        """Calls the function once per item, as one job; returns the values in order. With
        ``return_exceptions``, a failed call's exception takes its place instead of being
        raised."""
        return self._map(items, return_exceptions, options)

    async def map_async(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        return await self._map_async(items, return_exceptions, options)

    def stream(self, *args: Any, **options: Any) -> OutputStream:
        return OutputStream(self, self._task_for(args), self._opts.replace(**options))

    def stream_async(self, *args: Any, **options: Any) -> AsyncOutputStream:
        return AsyncOutputStream(self, self._task_for(args), self._opts.replace(**options))


# ------------------------------------------------------------------------- WASI modules


class _Uploaded(_Callable):
    """A callable whose program is uploaded by it (a WASI module, a GPU kernel): uploaded
    once per grid, again when the coordinator no longer has it."""

    program: str

    def upload(self) -> str:
        raise NotImplementedError

    async def upload_async(self) -> str:
        raise NotImplementedError

    def _program(self) -> str:
        if not _jobs.is_uploaded(self._grid, self.program):
            self.upload()
        return self.program

    async def _program_async(self) -> str:
        if not _jobs.is_uploaded(self._grid, self.program):
            await self.upload_async()
        return self.program

    def _forget_upload(self) -> bool:
        _jobs.forget_upload(self._grid, self.program)
        return True


class WasmProgram(_Uploaded):
    """A WASI command module, run on the grid.

    - ``m(args=[...], stdin="...", env={...})`` blocks and returns the
      :class:`~runegrid.TaskResult` (``stdout``, ``stdout_bytes``, ``exit_code``, ``status``,
      ``fuel``, ``digest``, ``acceptance``); a task that did not succeed raises its
      :class:`~runegrid.TaskError` unless ``check=False``;
    - ``await m.remote(...)``: the same, async;
    - ``m.map(items)`` / ``await m.map_async(items)``: one job, one task per item (a dict
      with ``args``/``stdin``/``env``, a list of arguments, or a single argument);
    - ``m.stream(...)`` / ``m.stream_async(...)``: stdout as it is written.

    The module is uploaded on first use (once per :class:`~runegrid.Grid`), or by
    :meth:`upload`.
    """

    def __init__(self, grid: JobClient, module: bytes, options: Options) -> None:
        super().__init__(grid, options)
        self.module = module
        #: The program's name: SHA-256 (hex) of the module's bytes.
        self.program = hashlib.sha256(module).hexdigest()

    def __repr__(self) -> str:
        return f"WasmProgram({self.program[:12]}, {len(self.module)} bytes)"

    def upload(self) -> str:
        """Uploads the module (again); returns the program's hash."""
        self.program = self._grid.upload(self.module)
        return self.program

    async def upload_async(self) -> str:
        self.program = await self._grid.upload_async(self.module)
        return self.program

    def _label(self) -> str:
        return self.program[:12]

    def _item_task(self, item: Any) -> dict[str, Any]:
        return p.wasm_item(item)

    def _outcome(self, result: TaskResult, opts: Options) -> TaskResult:
        return p.wasm_outcome(result, opts.check)

    def __call__(
        self,
        args: Iterable[Any] | str | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskResult:
        return self._call(p.wasm_task(args, stdin, env), options)  # type: ignore[no-any-return]

    async def remote(
        self,
        args: Iterable[Any] | str | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskResult:
        return await self._call_async(p.wasm_task(args, stdin, env), options)  # type: ignore[no-any-return]

    def map(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        """Runs one task per item, as one job; returns the results in order. With
        ``return_exceptions``, a failed task's exception takes its place instead of being
        raised."""
        return self._map(items, return_exceptions, options)

    async def map_async(
        self, items: Iterable[Any], *, return_exceptions: bool = False, **options: Any
    ) -> list[Any]:
        return await self._map_async(items, return_exceptions, options)

    def stream(
        self,
        args: Iterable[Any] | str | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> OutputStream:
        return OutputStream(self, p.wasm_task(args, stdin, env), self._opts.replace(**options))

    def stream_async(
        self,
        args: Iterable[Any] | str | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncOutputStream:
        return AsyncOutputStream(self, p.wasm_task(args, stdin, env), self._opts.replace(**options))
