"""One router per area: events, messaging, streaming, control (status, list, cancel, resume),
live (SSE), websocket, health, metrics, dashboard and apidocs; mailbox, requests (request/reply)
and timeline. app.py includes them, with the
dependencies and error answers the workflow routers share."""
