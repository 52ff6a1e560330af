"""Broker adapters: one protocol, one package per broker, one registry."""
