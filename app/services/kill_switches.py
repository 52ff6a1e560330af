"""Kill-switches: environment variables an operator flips to stop live BYOB trading.

``BYOB_LIVE_DISABLED=1`` stops every live order submission (place and modify) on a
bring-your-own-broker connection (Tier A or B, ownership ``byob``);
``BYOB_BROKER_<SLUG>_DISABLED=1`` does the same for one broker slug. Paper connections and
the platform's own default connections (ownership ``platform``) are never affected, and
cancels and reads keep working (risk reduction). A switched-off broker is also hidden from
the broker list and refuses new connections.

The switches are read from ``os.environ`` on every call, never cached in ``Settings``: an
operator who exports a switch into a running process's environment (or a test that sets
one) takes effect on the next request without a restart.

A switch value that is neither clearly on (``1``, ``true``, ``yes``, ``on``) nor clearly off
(``0``, ``false``, ``no``, ``off``, empty) counts as ON: a typo in a safety switch must fail
closed, and the admin endpoint shows the value so the operator can see why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from app import errors

LIVE_DISABLED = "BYOB_LIVE_DISABLED"
# Matched case-insensitively: an operator who types ``BYOB_BROKER_alpaca_DISABLED=1`` in an
# emergency means it (a safety switch fails closed).
_BROKER_VARIABLE = re.compile(r"^BYOB_BROKER_([A-Z0-9_]+)_DISABLED$", re.IGNORECASE)
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})
# Ownerships a kill-switch applies to: only credentials users brought themselves.
BYOB = "byob"
LIVE_BYOB_TIERS = frozenset({"A", "B"})


def broker_variable(slug: str) -> str:
    """``BYOB_BROKER_<SLUG>_DISABLED`` for a slug (upper case, anything not [A-Z0-9] as ``_``)."""
    return f"BYOB_BROKER_{re.sub(r'[^A-Z0-9]', '_', slug.upper())}_DISABLED"


def _is_on(value: str | None) -> bool:
    if value is None:
        return False
    normalized = value.strip().lower()
    if normalized in _OFF:
        return False
    return True  # _ON, and anything unrecognised (fail closed)


def is_live_byob(ownership: str, tier: str) -> bool:
    """Whether a connection trades live on a credential the user brought (Tier A or B)."""
    return ownership == BYOB and tier in LIVE_BYOB_TIERS


@dataclass(frozen=True, slots=True)
class Switch:
    variable: str
    value: str
    slug: str | None  # None: the global switch


@dataclass(frozen=True, slots=True)
class KillSwitches:
    """A snapshot of the switches in force, taken from an environment mapping."""

    live_disabled: bool
    disabled_slugs: frozenset[str]
    switches: tuple[Switch, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> KillSwitches:
        """Read the switches now (``os.environ`` unless a mapping is given)."""
        env = os.environ if environ is None else environ
        live: list[Switch] = []
        brokers: list[Switch] = []
        for name in sorted(env):
            if not _is_on(env[name]):
                continue
            if name.upper() == LIVE_DISABLED:
                live.append(Switch(name, env[name], None))
            elif (match := _BROKER_VARIABLE.match(name)) is not None:
                brokers.append(Switch(name, env[name], match.group(1).lower()))
        return cls(
            live_disabled=bool(live),
            disabled_slugs=frozenset(s.slug for s in brokers if s.slug is not None),
            switches=(*live, *brokers),
        )

    def broker_disabled(self, slug: str) -> bool:
        """Whether the per-broker switch of ``slug`` is on (compared as variable names, so
        ``interactive-brokers`` is ``BYOB_BROKER_INTERACTIVE_BROKERS_DISABLED``)."""
        variable = broker_variable(slug)
        return any(s.variable.upper() == variable for s in self.switches if s.slug is not None)

    def blocks_live_orders(self, *, slug: str, ownership: str, tier: str) -> bool:
        """Whether a new live order (place or modify) on such a connection is refused."""
        if not is_live_byob(ownership, tier):
            return False
        return self.live_disabled or self.broker_disabled(slug)

    def hides_broker(self, *, slug: str, tier: str) -> bool:
        """Whether a broker is left out of the list offered for new BYOB connections.

        The global switch hides every live path (Tier A and B); a per-broker switch hides
        its broker whatever its tier. The paper broker is never hidden.
        """
        if tier == "paper":
            return False
        if self.broker_disabled(slug):
            return True
        return self.live_disabled and tier in LIVE_BYOB_TIERS

    def ensure_live_orders_allowed(self, *, slug: str, ownership: str, tier: str) -> None:
        """Raise 503 ``live_trading_disabled`` when a switch covers this connection."""
        if not self.blocks_live_orders(slug=slug, ownership=ownership, tier=tier):
            return
        if self.broker_disabled(slug):
            raise errors.LiveTradingDisabled(
                f"live trading on {slug} connections is switched off "
                f"({broker_variable(slug)}); cancels and reads keep working"
            )
        raise errors.LiveTradingDisabled(
            f"live trading on your own broker connections is switched off ({LIVE_DISABLED}); "
            "cancels and reads keep working"
        )

    def ensure_connectable(self, *, slug: str, tier: str) -> None:
        """Raise 503 ``live_trading_disabled`` for a new BYOB connection to a hidden broker."""
        if self.hides_broker(slug=slug, tier=tier):
            raise errors.LiveTradingDisabled(f"new connections to {slug} are switched off")
