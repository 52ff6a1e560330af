"""Persistence: declarative models, sessions and the repositories that scope every query."""
