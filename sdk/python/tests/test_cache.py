"""The result cache through the SDK on a real grid: a seeded map answered from verified results."""

from __future__ import annotations

import pytest

from runegrid import Grid


def test_a_seeded_map_run_again_is_answered_from_the_cache(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    inputs = [["cache", str(i)] for i in range(3)]
    opts = dict(seed=1234, policy="quorum", replicas=2, agree=2)
    first = echo.map(inputs, **opts)
    assert [r.acceptance for r in first] == ["quorum"] * 3
    again = echo.map(inputs, **opts)
    assert [r.acceptance for r in again] == ["cached"] * 3
    assert [r.stdout for r in again] == [r.stdout for r in first]
    # Opting out runs the tasks again.
    fresh = echo.map(inputs, cache=False, **opts)
    assert [r.acceptance for r in fresh] == ["quorum"] * 3


def test_seeds_are_checked_before_anything_is_sent(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    with pytest.raises(ValueError, match="seed"):
        echo(args=["x"], seed=2**53)
    with pytest.raises(TypeError, match="cache"):
        echo(args=["x"], cache="no")
