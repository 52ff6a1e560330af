"""Order-event streaming: the outbox write discipline, the per-instance hub, the Postgres
LISTEN relay, and the ``/v1/stream`` wire protocol. The WebSocket session itself (auth,
subscribe, backlog then live) lives in ``app.services.events``."""
