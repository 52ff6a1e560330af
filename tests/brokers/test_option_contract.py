"""The option contract model: OCC symbols parsed and formatted exactly, padded or not."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers.base import InvalidOptionSymbol, OptionContract, OptionRight, is_option_symbol

roots = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
expirations = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
# Strikes are quoted to a tenth of a cent at most: 8 digits of strike x 1000.
strikes = st.integers(min_value=1, max_value=99_999_999).map(lambda m: Decimal(m) / 1000)


@given(root=roots, expiration=expirations, right=st.sampled_from(OptionRight), strike=strikes)
def test_format_then_parse_is_the_same_contract(
    root: str, expiration: date, right: OptionRight, strike: Decimal
) -> None:
    contract = OptionContract(
        underlying=root, root=root, expiration=expiration, right=right, strike=strike
    )
    for text in (contract.symbol, contract.occ_padded):
        parsed = OptionContract.parse(text)
        assert (parsed.root, parsed.expiration, parsed.right, parsed.strike) == (
            root,
            expiration,
            right,
            strike,
        )
        assert (parsed.symbol, parsed.occ_padded) == (contract.symbol, contract.occ_padded)
    assert len(contract.occ_padded) == 21
    assert " " not in contract.symbol


@pytest.mark.parametrize(
    "text",
    [
        "AAPL",  # an equity
        "AAPL261318C00150000",  # month 13
        "AAPL261218X00150000",  # neither call nor put
        "AAPL261218C0015000",  # seven strike digits
        "AAPL261218C00000000",  # a zero strike
        "TOOLONGR261218C00150000",  # a root of more than six characters
        "",
    ],
)
def test_a_malformed_symbol_is_refused(text: str) -> None:
    with pytest.raises(InvalidOptionSymbol):
        OptionContract.parse(text)


def test_the_shape_check_knows_both_forms() -> None:
    assert is_option_symbol("AAPL261218C00150000")
    assert is_option_symbol("AAPL  261218C00150000")
    assert not is_option_symbol("AAPL")
    assert not is_option_symbol("BTC-USD")


def test_expiry_is_the_end_of_the_expiration_day() -> None:
    contract = OptionContract.parse("AAPL  261218P00152500")
    assert (contract.symbol, contract.strike) == ("AAPL261218P00152500", Decimal("152.5"))
    assert not contract.is_expired(date(2026, 12, 18))
    assert contract.is_expired(date(2026, 12, 19))
