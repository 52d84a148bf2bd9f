"""Errors as exceptions: API errors, failed tasks, timeouts."""

from __future__ import annotations

import httpx
import pytest

from runegrid import (
    ApiError,
    CallTimeout,
    ConnectionFailed,
    Grid,
    NonZeroExit,
    OutOfFuel,
    RunegridError,
    StackOverflow,
    TaskError,
    Trap,
)
from runegrid.local import LocalGrid


def test_wrong_token(local: LocalGrid, module) -> None:
    with Grid(local.url, "not-a-token", timeout=60) as grid:
        with pytest.raises(ApiError) as e:
            grid.workers()
        assert e.value.code == "unauthorized"
        assert e.value.status == 401
        assert "invalid api token" in e.value.message
        with pytest.raises(ApiError) as e:
            grid.wasm(module("echo"))(args=["x"])
        assert e.value.code == "unauthorized"
        assert isinstance(e.value, RunegridError)


def test_missing_token(local: LocalGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNEGRID_TOKEN", raising=False)
    with Grid(local.url) as grid:
        with pytest.raises(ApiError) as e:
            grid.me()
        assert e.value.code == "unauthorized"
        assert "RUNEGRID_TOKEN" in e.value.message


def test_contributor_is_forbidden(local: LocalGrid, module) -> None:
    """A contributor account runs workers; submitting work is forbidden."""
    token = httpx.post(f"{local.url}/v1/contributors").json()["token"]
    with Grid(local.url, token, timeout=60) as grid:
        with pytest.raises(ApiError) as e:
            grid.wasm(module("echo"))()
        assert e.value.code == "forbidden"
        assert e.value.status == 403


def test_invalid_module(grid: Grid) -> None:
    with pytest.raises(ApiError) as e:
        grid.wasm(b"\0asm\x01\0\0\0garbage")()
    assert e.value.code == "invalid_module"
    assert e.value.status == 400


def test_invalid_policy(grid: Grid, module) -> None:
    with pytest.raises(ApiError) as e:
        grid.wasm(module("echo"))(policy="none", replicas=3)
    assert e.value.code == "invalid_policy"
    with pytest.raises(ValueError):
        grid.wasm(module("echo")).options(policy="vote")
    with pytest.raises(TypeError, match="unknown option"):
        grid.wasm(module("echo")).options(replicaz=3)


def test_unknown_job(grid: Grid) -> None:
    with pytest.raises(ApiError) as e:
        grid.results(10**9)
    assert e.value.code == "not_found" and e.value.status == 404


def test_out_of_fuel(grid: Grid, module) -> None:
    with pytest.raises(OutOfFuel) as e:
        grid.wasm(module("spin"))(fuel=10**6)
    err = e.value
    assert isinstance(err, TaskError)
    assert err.status is not None and err.status.kind == "out_of_fuel"
    assert err.state == "failed"
    assert err.fuel == 10**6
    assert err.result.acceptance in ("quorum", "trusted")
    assert "out of fuel" in str(err)


def test_trap_and_stack_overflow(grid: Grid, module) -> None:
    with pytest.raises(Trap) as e:
        grid.wasm(module("trap"))()
    assert e.value.trap == "unreachable"
    with pytest.raises(StackOverflow):
        grid.wasm(module("recurse"))()


def test_non_zero_exit(grid: Grid, module) -> None:
    exit_with = grid.wasm(module("exitcode"))
    with pytest.raises(NonZeroExit) as e:
        exit_with(stdin="3")
    assert e.value.exit_code == 3
    assert "exited with code 3" in str(e.value)
    r = exit_with(stdin="3", check=False)
    assert r.exit_code == 3 and r.state == "failed" and not r.ok


def test_timeout_cancels_the_job(grid: Grid, module) -> None:
    """A quorum the grid cannot reach (5 distinct workers of 3) never finishes."""
    with pytest.raises(CallTimeout) as e:
        grid.wasm(module("echo"))(replicas=5, agree=5, timeout=1.0)
    assert isinstance(e.value, TimeoutError)
    assert e.value.job is not None
    assert e.value.waiting_for  # the coordinator's explanation (too few workers)
    assert grid.job(e.value.job)["state"] == "cancelled"


def test_unreachable_coordinator() -> None:
    with Grid("http://127.0.0.1:9", "t") as grid:
        with pytest.raises(ConnectionFailed):
            grid.me()
