"""Credits through the SDK on a real grid: balance, price, a job's cost, a refused job."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runegrid import Grid, InsufficientCredits


def test_price_balance_and_a_jobs_cost(grid: Grid, module) -> None:
    price = grid.price()
    assert price.charging
    assert price.base == Decimal(1)
    assert Decimal("0.5") * price.base <= price.price <= 2 * price.base
    assert 0.5 <= price.multiplier <= 2 and price.fee == 0.05

    before = grid.balance()
    echo = grid.wasm(module("echo"))
    r = echo(args=["x"], fuel=10_000_000)
    cost = grid.cost(r.job)
    assert cost is not None
    assert cost.held > 0 and 0 < cost.spent <= cost.held
    after = grid.balance()
    # The local grid's workers run under the same account: it paid for the job and earned the
    # payments.
    assert after.spent - before.spent >= cost.spent
    assert after.earned > before.earned


def test_a_job_beyond_the_balance_is_refused(grid: Grid, module) -> None:
    echo = grid.wasm(module("echo"))
    balance = grid.balance().balance
    with pytest.raises(InsufficientCredits) as e:
        # 10^15 fuel × 3 attempts × 1000 tasks is far beyond any welcome.
        echo.map([["x"]] * 1000, fuel=10**15, policy="quorum", replicas=2, agree=2)
    assert e.value.status == 402 and e.value.code == "insufficient_credits"
    assert "available" in e.value.message
    assert grid.balance().balance == balance
