"""The public API's JSON shapes (``../shared/API.md``), shared by routers and services."""
