"""WASI modules on a real grid: calls, async calls, fan-out, streaming, verification options."""

from __future__ import annotations

import re

import anyio
import pytest

from runegrid import Grid, NonZeroExit, TaskResult
from runegrid.local import LocalGrid


def test_call_with_args_stdin_env(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    r = echo(args=["100", "two words", 3], stdin="7\nhello", env={"B": "2", "A": "1"})
    assert isinstance(r, TaskResult)
    assert r.stdout == "arg=100\narg=two words\narg=3\nenv A=1\nenv B=2\nstdin=7\nhello"
    assert r.stdout_bytes == r.stdout.encode()
    assert r.state == "verified" and r.ok
    assert r.exit_code == 0
    assert r.status is not None and r.status.kind == "exited" and r.status.code == 0
    assert r.fuel is not None and r.fuel > 0
    assert r.digest is not None and re.fullmatch(r"[0-9a-f]{64}", r.digest)
    assert r.acceptance in ("quorum", "trusted")
    assert r.job > 0 and r.index == 0


def test_module_from_bytes_and_wat_text(grid: Grid, module) -> None:
    text = module("echo").read_text()
    by_bytes = grid.wasm(text.encode())
    by_text = grid.wasm(text)
    assert by_bytes.program == by_text.program
    assert by_text(args=["x"]).stdout == "arg=x\nstdin="
    assert by_bytes.upload() == by_bytes.program


def test_same_result_everywhere(grid: Grid, module) -> None:
    """Deterministic: the same input gives the same digest and fuel on every call."""
    echo = grid.wasm(module("echo"))
    a, b = echo(stdin="same"), echo(stdin="same")
    assert (a.digest, a.fuel, a.stdout) == (b.digest, b.fuel, b.stdout)


def test_binary_stdout(grid: Grid, module) -> None:
    r = grid.wasm(module("binary"))()
    assert r.stdout_bytes == b"\xff\x00\x01"
    assert r.stdout == "\ufffd\x00\x01"


def test_map_keeps_order(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    n = 50
    results = echo.map([[str(i)] for i in range(n)], progress=False)
    assert [r.stdout for r in results] == [f"arg={i}\nstdin=" for i in range(n)]
    assert [r.index for r in results] == list(range(n))
    assert len({r.job for r in results}) == 1, "a map is one job"


def test_map_item_forms(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    results = echo.map(
        ["solo", 7, ["a", "b"], {"args": ["c"], "stdin": "in", "env": {"K": "V"}}, {}],
        progress=False,
    )
    assert [r.stdout for r in results] == [
        "arg=solo\nstdin=",
        "arg=7\nstdin=",
        "arg=a\narg=b\nstdin=",
        "arg=c\nenv K=V\nstdin=in",
        "stdin=",
    ]


def test_map_with_progress_bar(grid: Grid, module, capsys: pytest.CaptureFixture[str]) -> None:
    echo = grid.wasm(module("echo"))
    results = echo.map([[str(i)] for i in range(20)], progress=True)
    assert [r.stdout for r in results] == [f"arg={i}\nstdin=" for i in range(20)]
    assert "20/20" in capsys.readouterr().err


def test_map_return_exceptions(grid: Grid, module) -> None:
    exit_with = grid.wasm(module("exitcode"))
    out = exit_with.map([{"stdin": s} for s in "030"], return_exceptions=True, progress=False)
    assert isinstance(out[0], TaskResult) and out[0].exit_code == 0
    assert isinstance(out[1], NonZeroExit) and out[1].exit_code == 3
    assert isinstance(out[2], TaskResult) and out[2].exit_code == 0
    with pytest.raises(NonZeroExit):
        exit_with.map([{"stdin": s} for s in "030"], progress=False)
    unchecked = exit_with.map([{"stdin": s} for s in "05"], check=False, progress=False)
    assert [r.exit_code for r in unchecked] == [0, 5]


def test_map_of_nothing(grid: Grid, module) -> None:
    assert grid.wasm(module("echo")).map([]) == []


def test_quorum_options(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    strict = echo.options(replicas=2, agree=2, fuel=10**8)
    assert strict.opts.replicas == 2 and echo.opts.replicas is None
    r = strict(args=["q"])
    assert r.acceptance == "quorum"
    assert r.attempts >= 2
    job = grid.job(r.job)
    assert (job["policy"], job["replicas"], job["agree"]) == ("quorum", 2, 2)
    assert job["limits"]["fuel"] == 10**8
    r = echo(args=["q"], policy="none")
    assert r.acceptance == "unreplicated" and r.attempts == 1


def test_limits_per_call(grid: Grid, module) -> None:
    r = grid.wasm(module("echo"))(
        args=["l"],
        memory_bytes=16 << 20,
        wall_time_ms=30_000,
        stdout_bytes=4096,
        scratch_bytes=1 << 20,
        name="limits",
    )
    job = grid.job(r.job)
    assert job["name"] == "limits"
    assert job["limits"]["memory_bytes"] == 16 << 20
    assert job["limits"]["wall_time_ms"] == 30_000
    assert job["limits"]["stdout_bytes"] == 4096
    assert job["limits"]["scratch_bytes"] == 1 << 20


def test_stream(grid: Grid, module) -> None:
    ticks = grid.wasm(module("ticks"))
    stream = ticks.stream()
    chunks = []
    seen_while_running = 0
    for chunk in stream:
        chunks.append(chunk)
        assert stream.job is not None
        if grid.job(stream.job)["state"] == "active":
            seen_while_running += 1
    assert "".join(chunks) == "tick 0\ntick 1\ntick 2\ntick 3\n"
    assert seen_while_running >= 1, "no output arrived while the task was running"
    assert stream.result is not None and stream.result.ok
    assert stream.value is stream.result


def test_stream_of_a_finished_task_yields_its_output(grid: Grid, module) -> None:
    """Output written before the stream was opened comes from the accepted result."""
    stream = grid.wasm(module("echo")).stream(args=["s"], stdin="in")
    assert stream.read() == "arg=s\nstdin=in"
    assert stream.result is not None and stream.result.stdout == "arg=s\nstdin=in"


def test_stream_raises_after_output(grid: Grid, module) -> None:
    stream = grid.wasm(module("exitcode")).stream(stdin="4")
    with pytest.raises(NonZeroExit) as e:
        list(stream)
    assert e.value.exit_code == 4
    assert stream.result is not None and stream.result.exit_code == 4


@pytest.mark.anyio
async def test_async_call_map_stream(new_grid, module) -> None:
    async with new_grid() as grid:
        echo = grid.wasm(module("echo"))
        r = await echo.remote(args=["async"], stdin="x")
        assert r.stdout == "arg=async\nstdin=x"

        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = (await echo.remote(args=[str(i)])).stdout

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, i)
        assert results == {i: f"arg={i}\nstdin=" for i in range(10)}

        mapped = await echo.map_async([[str(i)] for i in range(30)], progress=False)
        assert [m.stdout for m in mapped] == [f"arg={i}\nstdin=" for i in range(30)]

        stream = grid.wasm(module("ticks")).stream_async()
        chunks = [c async for c in stream]
        assert "".join(chunks) == "tick 0\ntick 1\ntick 2\ntick 3\n"
        assert stream.result is not None and stream.result.ok


def test_low_level_api(grid: Grid, module) -> None:
    workers = grid.workers()
    assert sum(1 for w in workers if w["connected"]) >= 3
    assert grid.me()["admin"] is True
    program = grid.upload(module("echo").read_bytes())
    job = grid.submit(program, [{"args": ["1"]}, {"args": ["2"]}], policy="none")
    results = grid.wait(job)
    assert [r.stdout for r in results] == ["arg=1\nstdin=", "arg=2\nstdin="]
    events = list(grid.events(job, timeout=60))
    assert events[-1]["type"] == "done"
    assert any(j["job"] == job for j in grid.jobs())
    assert grid.stats()["now"]["workers_native"] >= 3


def test_env_defaults(local: LocalGrid, module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNEGRID_URL", local.url)
    monkeypatch.setenv("RUNEGRID_TOKEN", local.token)
    with Grid(timeout=60) as grid:
        assert grid.url == local.url
        assert grid.wasm(module("echo"))(args=["env"]).stdout == "arg=env\nstdin="


def test_output_files_come_back(grid: Grid, module) -> None:
    """A file written under /out is part of the result (compared between replicas) and
    downloads byte for byte; past ``output_bytes`` the task ends ``output_limit``."""
    import hashlib

    from runegrid import OutputFile, OutputLimit

    prog = grid.wasm(module("outfile"))
    r = prog()
    assert r.stdout == "done"
    content = b"hello, files\n"
    assert r.files == (
        OutputFile(path="hello.txt", size=len(content), sha256=hashlib.sha256(content).hexdigest()),
    )
    assert grid.file(r, "hello.txt") == content
    assert grid.file(r.job, r.index, "hello.txt") == content
    with pytest.raises(OutputLimit):
        grid.wasm(module("outfile"), output_bytes=5)()
