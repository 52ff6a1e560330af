"""The fake gateway's option book: listed contracts with conids, the secdef answers, quotes.

Contracts and prices come from the paper option market (``app.paper.options_market``), so the
fake's chain is the same market every broker fake shows. Wire shapes follow IBKR's Web API
OpenAPI document ("IB REST API" 2.13.0; copy in codyfarrey/swagger-codegen-demo
``ibkr-client-apispec.json``) and ``Voyz/ibind``:

* ``/iserver/secdef/search``: ``conid`` a string, ``opt`` the listed dates ``YYYYMMDD;...``,
  the ``OPT`` section's ``months`` ``MMMYY;...`` and ``exchange`` list (spec example).
* ``/iserver/secdef/strikes``: ``{"call": [numbers], "put": [numbers]}`` (spec example).
* ``/iserver/secdef/info`` with ``sectype=OPT``: a list, one entry per contract of the month
  at that strike and right (weeklies are several entries; ibind rest_06_options_chain),
  fields of the generated ``SecdefInfo`` model (``conid`` an integer, ``maturityDate``
  ``YYYYMMDD``, ``multiplier`` text, ``tradingClass``, ``desc2``...).
* ``/trsrv/secdef?conids=``: ``{"secdef": [{conid, assetClass, expiry, putOrCall, strike,
  multiplier, ticker, undConid, ...}]}`` (spec example, fields as in option position rows).
* Snapshot option fields (ibind ``ibkr_definitions.py``): 7308-7311 delta, gamma, theta,
  vega; 7633 implied volatility in percent (``"24.1%"``); 7638 open interest.

Not documented, so chosen here: option conids (from 700000000 in listing order), the
error wording for an unknown month/strike, the open interest figure (a fixed function of the
contract), and the commission (0.65 USD a contract, a round figure; what-if text
"0.65 USD", in the spec example's "1 USD" form).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from app.brokers.base import OptionContract, OptionRight
from app.paper.options_market import OptionModelQuote, SeededOptionMarket
from app.paper.quotes import SeededQuoteSource

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
SPREAD_CONID_USD = 28812380  # ibind examples/rest_06_options_chain.py
COMMISSION = Decimal("0.65")  # per contract (chosen, see the module docstring)
EXCHANGES = "SMART;AMEX;BATS;BOX;CBOE;CBOE2;EDGX;EMERALD;GEMINI;ISE;MIAX;PHLX;PSE"


def month_code(day: date) -> str:
    return f"{MONTHS[day.month - 1]}{day:%y}"


def num(value: Decimal) -> float:
    return float(value)


def canonical(strike: Decimal) -> Decimal:
    """190, 192.5: no exponent, no trailing zeros (as an OCC symbol parses)."""
    if strike == strike.to_integral_value():
        return strike.quantize(Decimal(1))
    return strike.normalize()


@dataclass
class OptionBook:
    quotes: SeededQuoteSource

    def __post_init__(self) -> None:
        self.market = SeededOptionMarket(self.quotes)
        self._ids = itertools.count(700000000)
        self.by_symbol: dict[str, int] = {}
        self.by_conid: dict[int, OptionContract] = {}

    def conid(self, contract: OptionContract) -> int:
        found = self.by_symbol.get(contract.symbol)
        if found is None:
            found = next(self._ids)
            self.by_symbol[contract.symbol] = found
            self.by_conid[found] = contract
        return found

    def contract(self, conid: int) -> OptionContract | None:
        return self.by_conid.get(conid)

    def dates(self, underlying: str, today: date) -> list[date]:
        return [e.expiration for e in self.market.expirations(underlying, today)]

    def months(self, underlying: str, today: date) -> list[str]:
        return list(dict.fromkeys(month_code(d) for d in self.dates(underlying, today)))

    def search_section(self, underlying: str, today: date) -> tuple[str, dict[str, Any]]:
        dates = self.dates(underlying, today)
        section = {
            "secType": "OPT",
            "months": ";".join(self.months(underlying, today)),
            "exchange": EXCHANGES,
        }
        return ";".join(f"{d:%Y%m%d}" for d in dates), section

    def strikes(self, underlying: str, month: str, today: date) -> list[Decimal] | None:
        if month not in self.months(underlying, today):
            return None
        return self.market.strikes(underlying)

    def info(
        self,
        underlying: str,
        month: str,
        strike: Decimal,
        right: OptionRight,
        today: date,
    ) -> list[dict[str, Any]]:
        if strike not in self.market.strikes(underlying):
            return []
        strike = canonical(strike)
        rows = []
        for day in self.dates(underlying, today):
            if month_code(day) != month:
                continue
            contract = OptionContract(
                underlying=underlying, root=underlying, expiration=day, right=right, strike=strike
            )
            conid = self.conid(contract)
            rows.append(
                {
                    "conid": conid,
                    "symbol": underlying,
                    "secType": "OPT",
                    "exchange": "SMART",
                    "listingExchange": None,
                    "right": "C" if right is OptionRight.call else "P",
                    "strike": num(strike),
                    "currency": "USD",
                    "cusip": None,
                    "coupon": "No Coupon",
                    "desc1": underlying,
                    "desc2": f"{day:%b %d '%y} {strike} {right.value.title()}",
                    "maturityDate": f"{day:%Y%m%d}",
                    "multiplier": "100",
                    "tradingClass": underlying,
                    "validExchanges": EXCHANGES.replace(";", ","),
                }
            )
        return rows

    def secdef(self, conid: int, underlying_conid: int) -> dict[str, Any] | None:
        contract = self.by_conid.get(conid)
        if contract is None:
            return None
        return {
            "conid": conid,
            "currency": "USD",
            "name": contract.underlying,
            "assetClass": "OPT",
            "expiry": f"{contract.expiration:%Y%m%d}",
            "lastTradingDay": f"{contract.expiration:%Y%m%d}",
            "putOrCall": "C" if contract.right is OptionRight.call else "P",
            "strike": str(contract.strike),
            "ticker": contract.underlying,
            "undConid": underlying_conid,
            "multiplier": num(contract.multiplier),
            "type": "",
            "hasOptions": False,
            "fullName": self.full_name(contract),
            "isUS": True,
        }

    @staticmethod
    def full_name(contract: OptionContract) -> str:
        right = "Call" if contract.right is OptionRight.call else "Put"
        return f"{contract.underlying} {contract.expiration:%b%d'%y} {contract.strike} {right}"

    @staticmethod
    def description(contract: OptionContract) -> str:
        """``"SPY    JAN2025 440 C [SPY   250117C00440000 100]"`` (spec position example)."""
        right = "C" if contract.right is OptionRight.call else "P"
        return (
            f"{contract.underlying:<6} {contract.expiration:%b%Y}".upper()
            + f" {contract.strike} {right} [{contract.occ_padded} {contract.multiplier}]"
        )

    def quote(self, contract: OptionContract, at: datetime) -> OptionModelQuote:
        return self.market.quote(contract, at)

    def snapshot_fields(self, contract: OptionContract, at: datetime) -> dict[str, Any]:
        q = self.quote(contract, at)
        g = q.greeks
        fields: dict[str, Any] = {"31": str(q.last), "84": str(q.bid), "86": str(q.ask)}
        for key, value in (("7308", g.delta), ("7309", g.gamma), ("7310", g.theta)):
            if value is not None:
                fields[key] = str(value)
        if g.vega is not None:
            fields["7311"] = str(g.vega)
        if g.iv is not None:
            fields["7633"] = f"{(g.iv * 100).quantize(Decimal('0.1'))}%"
        fields["7638"] = str(100 + int(contract.strike) * 7 % 900)
        return fields
