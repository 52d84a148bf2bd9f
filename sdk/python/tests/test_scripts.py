"""Rune scripts on a real grid, through the coordinator's built-in ``rune`` program.

Marked ``script``: these need a coordinator that has the Rune runner (``-m "not script"``
leaves them out).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runegrid import Grid, OutOfFuel, ScriptError, TaskError

pytestmark = pytest.mark.script

ADD = "pub fn add(a, b) { a + b }"

SOURCE = """\
pub fn add(a, b) {
    a + b
}

pub fn echo(value) {
    value
}

pub fn count(n) {
    for i in 0..n {
        println!("line {}", i);
    }
    n
}

pub fn spin() {
    loop {}
}

pub fn boom() {
    panic!("boom");
}
"""


def test_call(grid: Grid) -> None:
    add = grid.script(ADD).function("add")
    assert add(1, 2) == 3
    assert add("a", "b") == "ab"


def test_call_result(grid: Grid) -> None:
    result = grid.script(SOURCE).function("count").call(3)
    assert result.value == 3
    assert result.output == "line 0\nline 1\nline 2\n"
    assert result.task.ok and result.task.exit_code == 0
    assert result.task.acceptance in ("quorum", "trusted")


def test_json_values_round_trip(grid: Grid) -> None:
    echo = grid.script(SOURCE).function("echo")
    value = {"list": [1, "two", [3.5]], "flag": True, "text": "héllo"}
    assert echo(value) == value


def test_script_from_a_file(grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "add.rn"
    path.write_text(ADD)
    assert grid.script(path).function("add")(2, 3) == 5
    assert grid.script(str(path)).function("add")(4, 5) == 9


@pytest.mark.anyio
async def test_async_call(new_grid) -> None:
    async with new_grid() as grid:
        add = grid.script(ADD).function("add")
        assert await add.remote(1, 2) == 3
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = await add.remote(i, i)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        assert results == {i: 2 * i for i in range(8)}
        assert await add.map_async([(i, 1) for i in range(20)], progress=False) == [
            i + 1 for i in range(20)
        ]


def test_map_in_order(grid: Grid) -> None:
    add = grid.script(ADD).function("add")
    n = 50
    assert add.map([(i, 1000) for i in range(n)], progress=False) == [i + 1000 for i in range(n)]


def test_stream(grid: Grid) -> None:
    count = grid.script(SOURCE).function("count")
    stream = count.stream(5)
    text = "".join(stream)
    assert text == "".join(f"line {i}\n" for i in range(5))
    assert stream.value == 5
    assert stream.result is not None and stream.result.ok


@pytest.mark.anyio
async def test_stream_async(new_grid) -> None:
    async with new_grid() as grid:
        stream = grid.script(SOURCE).function("count").stream_async(3)
        assert await stream.read() == "line 0\nline 1\nline 2\n"
        assert stream.value == 3


def test_compile_error(grid: Grid) -> None:
    broken = "pub fn add(a, b) {\n    a +\n}\n\npub fn other() { 1 }\n"
    with pytest.raises(ScriptError) as e:
        grid.script(broken).function("add")(1, 2)
    err = e.value
    assert err.kind == "compile"
    assert err.message
    assert err.line is not None and 1 <= err.line <= 3
    assert err.column is not None
    assert isinstance(err, TaskError) and err.result.state == "failed"


def test_runtime_error(grid: Grid) -> None:
    with pytest.raises(ScriptError) as e:
        grid.script(SOURCE).function("boom")()
    assert e.value.kind == "runtime"
    assert "boom" in e.value.message


def test_unknown_function(grid: Grid) -> None:
    with pytest.raises(ScriptError):
        grid.script(ADD).function("nope")(1)


def test_out_of_fuel(grid: Grid) -> None:
    with pytest.raises(OutOfFuel) as e:
        grid.script(SOURCE).function("spin")(fuel=10**7)
    assert e.value.status is not None and e.value.status.kind == "out_of_fuel"


def test_verification_options(grid: Grid) -> None:
    add = grid.script(ADD).function("add").options(replicas=2, agree=2)
    result = add.call(1, 2)
    assert result.value == 3
    assert result.task.acceptance == "quorum"
    job = grid.job(result.task.job)
    assert (job["policy"], job["replicas"], job["agree"]) == ("quorum", 2, 2)
