"""Credential encryption, secret redaction and caller authentication (JWT)."""
