"""The client side of the script protocol, against stand-in runners (WASI modules that print
what the coordinator's Rune runner prints), so it is checked without the runner itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runegrid import Grid, ScriptError, ScriptFunction


@pytest.fixture
def standin(grid: Grid, module, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Makes script calls run the stand-in module ``name`` instead of program ``rune``."""

    def use(name: str) -> None:
        program = grid.upload(module(name).read_bytes())

        async def program_async(self: ScriptFunction) -> str:
            return program

        monkeypatch.setattr(ScriptFunction, "_program", lambda self: program)
        monkeypatch.setattr(ScriptFunction, "_program_async", program_async)

    return use


def test_value_and_output(grid: Grid, standin) -> None:
    standin("standin_ok")
    f = grid.script("pub fn f() { }").function("f")
    assert f() == {"sum": 3}
    result = f.call()
    assert result.value == {"sum": 3}
    assert result.output == "line 0\nline 1\n"
    assert f.map([(), 1, (2, 3)], progress=False) == [{"sum": 3}] * 3


def test_stream_leaves_out_the_result_line(grid: Grid, standin) -> None:
    standin("standin_ok")
    stream = grid.script("pub fn f() { }").function("f").stream()
    chunks = list(stream)
    assert "".join(chunks) == "line 0\nline 1\n"
    assert stream.value == {"sum": 3}
    assert stream.result is not None and stream.result.stdout.endswith('{"ok":{"sum":3}}\n')


@pytest.mark.anyio
async def test_async(new_grid, module, standin) -> None:
    standin("standin_ok")
    async with new_grid() as grid:
        f = grid.script("pub fn f() { }").function("f")
        assert await f.remote() == {"sum": 3}
        stream = f.stream_async()
        assert await stream.read() == "line 0\nline 1\n"
        assert stream.value == {"sum": 3}


def test_script_error(grid: Grid, standin) -> None:
    standin("standin_error")
    f = grid.script("pub fn f() { }").function("f")
    with pytest.raises(ScriptError) as e:
        f()
    err = e.value
    assert (err.kind, err.message, err.line, err.column) == ("compile", "expected expression", 2, 7)
    assert err.result.exit_code == 1 and err.result.state == "failed"
    stream = f.stream()
    with pytest.raises(ScriptError):
        for chunk in stream:
            assert chunk == "partial\n"
    out = f.map([1, 2], return_exceptions=True, progress=False)
    assert all(isinstance(x, ScriptError) for x in out)
