"""Symbol conventions shared by all paths: which asset class a unified symbol names."""

from __future__ import annotations

import re

from app.brokers.base import AssetClass

_CRYPTO = re.compile(r"^[A-Z0-9]{2,10}[-/](USD|USDC|USDT|EUR|BTC|ETH)$")
# OCC option symbol: root (1-6), yymmdd, C/P, strike * 1000 (8 digits).
_OPTION = re.compile(r"^[A-Z]{1,6} ?\d{6}[CP]\d{8}$")


def normalize_symbol(symbol: str) -> str:
    return symbol.strip().upper()


def asset_class_of(symbol: str) -> AssetClass:
    """Classify a normalized symbol: crypto pairs, OCC options, otherwise equity."""
    if _CRYPTO.match(symbol):
        return AssetClass.crypto
    if _OPTION.match(symbol):
        return AssetClass.option
    return AssetClass.equity
