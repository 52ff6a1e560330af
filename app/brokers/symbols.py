"""Symbol conventions shared by all paths: which asset class a unified symbol names."""

from __future__ import annotations

import re

from app.brokers.base import AssetClass, is_option_symbol

_CRYPTO = re.compile(r"^[A-Z0-9]{2,10}[-/](USD|USDC|USDT|EUR|BTC|ETH)$")


def normalize_symbol(symbol: str) -> str:
    return symbol.strip().upper()


def asset_class_of(symbol: str) -> AssetClass:
    """Classify a normalized symbol: crypto pairs, OCC options, otherwise equity."""
    if _CRYPTO.match(symbol):
        return AssetClass.crypto
    if is_option_symbol(symbol):  # OCC, padded (root + spaces to 6) or not
        return AssetClass.option
    return AssetClass.equity
