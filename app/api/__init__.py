"""HTTP and WebSocket routers: thin, typed, problem+json on every error."""

API_PREFIX = "/v1"
