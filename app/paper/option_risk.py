"""What the paper broker holds against option positions, as pure functions of the holdings.

Nothing here reads the database, the clock or a quote. The rule, per underlying and per
expiration (a long option covers only shorts of its own expiration, so calendars and
diagonals are held leg by leg):

* Short calls need cover at any price of the underlying: the call slope at high prices
  (long calls minus short calls, times the multiplier) must not be negative, after the
  account's free shares of the underlying are pledged to make up the difference (a covered
  call: 100 shares per short call). Without enough cover the holdings are ``uncovered``.
* What remains at risk is the worst value at expiry of the group, over every price of the
  underlying: ``value(S) = sum(quantity x multiplier x intrinsic(S)) + pledged_shares x S``.
  The value is piecewise linear with kinks at the strikes and a non-negative slope above
  the highest one, so its minimum is at 0 or at a strike. The cash held is minus that
  minimum: a cash-secured put holds strike x 100, a vertical or an iron condor holds its
  width x 100 (the premium received is already in cash, so buying power falls by exactly
  the maximum loss), a long option holds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from app.brokers.base import OptionContract, OptionRight

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class OptionHolding:
    contract: OptionContract
    quantity: Decimal  # signed contracts: negative = short


@dataclass(frozen=True, slots=True)
class Requirement:
    """Cash held, shares pledged per underlying, and why the holdings are uncovered (if so)."""

    cash: Decimal
    pledged_shares: dict[str, Decimal] = field(default_factory=dict)
    uncovered: tuple[str, ...] = ()


def intrinsic(contract: OptionContract, spot: Decimal) -> Decimal:
    if contract.right is OptionRight.call:
        return max(ZERO, spot - contract.strike)
    return max(ZERO, contract.strike - spot)


def requirement(
    holdings: Iterable[OptionHolding], free_shares: Mapping[str, Decimal]
) -> Requirement:
    """The cash and shares the holdings need; ``free_shares`` are the account's shares of
    each underlying that open sell orders do not already hold."""
    groups: dict[tuple[str, date], list[OptionHolding]] = defaultdict(list)
    for holding in holdings:
        if holding.quantity != ZERO:
            groups[(holding.contract.underlying, holding.contract.expiration)].append(holding)
    cash = ZERO
    pledged: dict[str, Decimal] = {}
    uncovered: list[str] = []
    for (underlying, expiration), group in sorted(groups.items()):
        call_slope = sum(
            (
                h.quantity * h.contract.multiplier
                for h in group
                if h.contract.right is OptionRight.call
            ),
            ZERO,
        )
        needed = max(ZERO, -call_slope)
        already = pledged.get(underlying, ZERO)
        available = free_shares.get(underlying, ZERO) - already
        if needed > available:
            uncovered.append(
                f"uncovered short call on {underlying} expiring {expiration.isoformat()}: "
                f"{needed} shares or long calls of that expiration needed as cover, "
                f"{max(ZERO, available)} shares available"
            )
            continue
        if needed > ZERO:
            pledged[underlying] = already + needed
        prices = {ZERO} | {h.contract.strike for h in group}
        worst = min(
            sum(
                (h.quantity * h.contract.multiplier * intrinsic(h.contract, s) for h in group),
                ZERO,
            )
            + needed * s
            for s in prices
        )
        cash += max(ZERO, -worst)
    return Requirement(cash=cash, pledged_shares=pledged, uncovered=tuple(uncovered))
