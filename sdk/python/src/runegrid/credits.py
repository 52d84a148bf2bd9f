"""Credits: an account's balance, what work costs, what a job paid.

Amounts travel as integer micro-credits; here they are :class:`~decimal.Decimal` credits,
exact (``Decimal("12.5")``), with the micro-credits kept alongside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

MICROS_PER_CREDIT = 1_000_000


def credits(micros: Any) -> Decimal:
    """Micro-credits (an integer) as credits."""
    return Decimal(int(micros or 0)) / MICROS_PER_CREDIT


@dataclass(frozen=True)
class Credits:
    """An account's credits (``GET /v1/account``)."""

    account: str
    #: What it may spend (below zero after a clawback: its workers earn it back first).
    balance: Decimal
    #: Held for its unfinished jobs (each job's worst case, until it finishes).
    held: Decimal
    #: Earned by its workers for verified results (clawbacks deducted).
    earned: Decimal
    #: Paid for its jobs, fees included.
    spent: Decimal
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Credits:
        return cls(
            account=str(d.get("account") or ""),
            balance=credits(d.get("balance")),
            held=credits(d.get("held")),
            earned=credits(d.get("earned")),
            spent=credits(d.get("spent")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Price:
    """What work costs now (``GET /v1/price``)."""

    #: Credits per 10^9 fuel (the base price × the demand multiplier).
    price: Decimal
    #: The price at normal demand.
    base: Decimal
    #: Demand: between 0.5 (idle workers) and 2 (a long queue).
    multiplier: float
    #: The protocol fee on each payment, as a fraction (0.05 = 5%).
    fee: float
    queued: int
    free_slots: int
    #: False on a grid that does not charge.
    charging: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Price:
        return cls(
            price=credits(d.get("price")),
            base=credits(d.get("base")),
            multiplier=int(d.get("multiplier_ppm") or 0) / 1e6,
            fee=int(d.get("fee_ppm") or 0) / 1e6,
            queued=int(d.get("queued") or 0),
            free_slots=int(d.get("free_slots") or 0),
            charging=bool(d.get("charging", True)),
            raw=dict(d),
        )


@dataclass(frozen=True)
class JobCost:
    """What a job pays (``cost`` of ``GET /v1/jobs/{id}``)."""

    #: Credits per 10^9 fuel, fixed when the job was accepted.
    price: Decimal
    #: Held from the account while the job runs (0 on a grid that does not charge).
    held: Decimal
    #: Paid so far; once the job finished, its final cost.
    spent: Decimal

    @classmethod
    def from_json(cls, d: Any) -> JobCost | None:
        if not isinstance(d, Mapping):
            return None
        return cls(
            price=credits(d.get("price")),
            held=credits(d.get("held")),
            spent=credits(d.get("spent")),
        )
