"""Alpaca option discovery on the wire: contracts, expirations and chain snapshots.

* Contracts: ``GET /v2/options/contracts`` on the trading host (spec schema
  ``OptionContract``: strings for every decimal; ``{"option_contracts": [...],
  "next_page_token": ...}``). Alpaca has no expirations endpoint: expirations are the
  distinct ``expiration_date`` of the active contracts (hence ``expirations`` is emulated).
* Quotes and greeks: ``GET /v1beta1/options/snapshots/{underlying}`` on the data host
  (../shared/specs/alpaca-market-data-api.json, operation ``OptionChain``):
  ``{"snapshots": {"AAPL240426C00162500": {"latestQuote": {"ap", "bp", "t", ...},
  "latestTrade": {"p", "t", ...}, "greeks": {"delta", ...}, "impliedVolatility": ...}},
  "next_page_token": ...}``, with JSON numbers (the caller parses them as ``Decimal``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from app.brokers.alpaca.mapping import WIRE, dec, opt_dec, option_contract, ts, unknown
from app.brokers.base import (
    ExpirationType,
    Greeks,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OptionStyle,
)

SOURCE = "broker"  # Alpaca's own quotes and its Black-Scholes greeks (spec ``option_greeks``)

_RIGHTS = {"call": OptionRight.call, "put": OptionRight.put}
_STYLES = {"american": OptionStyle.american, "european": OptionStyle.european}


@dataclass(frozen=True, slots=True)
class ListedContract:
    contract: OptionContract
    open_interest: int | None
    tradable: bool


def page(body: object, key: str) -> tuple[object, str | None]:
    """``(items, next_page_token)`` of a paged answer; ``None`` token on the last page."""
    if not isinstance(body, dict) or key not in body:
        raise unknown(f"{key} payload", type(body).__name__)
    token = body.get("next_page_token")
    return body[key], token if isinstance(token, str) and token else None


def contract_from_wire(body: object) -> ListedContract:
    """One ``OptionContract`` object (its terms, not only its symbol)."""
    if not isinstance(body, dict):
        raise unknown("option contract", type(body).__name__)
    parsed = option_contract(str(body.get("symbol")))
    underlying = body.get("underlying_symbol")
    if not isinstance(underlying, str) or not underlying:
        raise unknown("underlying_symbol", underlying)
    expiration = body.get("expiration_date")
    if expiration != parsed.expiration.isoformat():
        raise unknown("expiration_date", expiration)
    right = WIRE.lookup(_RIGHTS, body.get("type"), "contract type")
    strike = dec(body.get("strike_price"), "strike_price")
    if right is not parsed.right or strike != parsed.strike:
        raise unknown("contract terms", body.get("symbol"))
    interest = opt_dec(body.get("open_interest"), "open_interest")
    return ListedContract(
        contract=OptionContract(
            underlying=underlying,
            root=str(body.get("root_symbol") or parsed.root),
            expiration=parsed.expiration,
            right=right,
            strike=parsed.strike,
            multiplier=dec(body.get("multiplier"), "multiplier"),
            style=WIRE.lookup(_STYLES, body.get("style"), "contract style"),
        ),
        open_interest=None if interest is None else int(interest),
        tradable=body.get("tradable") is True,
    )


def contracts_from_wire(items: object) -> list[ListedContract]:
    if not isinstance(items, list):
        raise unknown("option_contracts", type(items).__name__)
    return [contract_from_wire(item) for item in items]


def _third_friday(day: date) -> date:
    first = day.replace(day=1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def expiration_type(day: date) -> ExpirationType:
    """Alpaca does not say: a third Friday is the standard monthly, another Friday a weekly,
    any other day (dailies, end-of-month, holiday-shifted) ``other``."""
    if day == _third_friday(day):
        return ExpirationType.standard
    if day.weekday() == 4:
        return ExpirationType.weekly
    return ExpirationType.other


def expirations(contracts: Iterable[ListedContract]) -> list[OptionExpiration]:
    days = sorted({c.contract.expiration for c in contracts})
    return [OptionExpiration(expiration=d, expiration_type=expiration_type(d)) for d in days]


def _greeks(snapshot: dict[str, object]) -> Greeks | None:
    raw = snapshot.get("greeks")
    iv = opt_dec(snapshot.get("impliedVolatility"), "impliedVolatility", text=False)
    if not isinstance(raw, dict):
        if iv is None:
            return None
        raw = {}

    def greek(name: str) -> Decimal | None:
        return opt_dec(raw.get(name), name, text=False)

    return Greeks(
        delta=greek("delta"),
        gamma=greek("gamma"),
        theta=greek("theta"),
        vega=greek("vega"),
        rho=greek("rho"),
        iv=iv,
    )


def quote_from_snapshot(
    contract: OptionContract, snapshot: object, open_interest: int | None, now: datetime
) -> OptionQuote:
    """One chain snapshot into an ``OptionQuote``; ``as_of`` is the newer of its quote and
    trade times (``now`` when it has neither)."""
    if not isinstance(snapshot, dict):
        raise unknown("option snapshot", type(snapshot).__name__)
    quote = snapshot.get("latestQuote")
    trade = snapshot.get("latestTrade")
    bid = ask = last = None
    times: list[datetime] = []
    if isinstance(quote, dict):
        bid = dec(quote.get("bp"), "bp", text=False)
        ask = dec(quote.get("ap"), "ap", text=False)
        times.append(ts(quote.get("t"), "t"))
    if isinstance(trade, dict):
        last = dec(trade.get("p"), "p", text=False)
        times.append(ts(trade.get("t"), "t"))
    return OptionQuote(
        contract=contract,
        bid=bid,
        ask=ask,
        last=last,
        open_interest=open_interest,
        greeks=_greeks(snapshot),
        source=SOURCE,
        as_of=max(times) if times else now,
    )


def snapshots_from_wire(items: object) -> dict[str, object]:
    if not isinstance(items, dict):
        raise unknown("snapshots", type(items).__name__)
    return {option_contract(str(symbol)).symbol: snap for symbol, snap in items.items()}


def chain(
    contracts: list[ListedContract], snapshots: dict[str, object], now: datetime
) -> list[OptionQuote]:
    """The listed contracts with their snapshot where there is one (a contract nobody has
    quoted yet is listed without prices), sorted by expiration, strike and right."""
    result = [
        quote_from_snapshot(c.contract, snapshots[c.contract.symbol], c.open_interest, now)
        if c.contract.symbol in snapshots
        else OptionQuote(c.contract, None, None, None, c.open_interest, None, SOURCE, now)
        for c in contracts
    ]
    result.sort(key=lambda q: (q.contract.expiration, q.contract.strike, q.contract.right))
    return result
