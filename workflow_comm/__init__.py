"""Reference server for DBOS workflow communication: events, messaging and streaming.

The package, top down (each file imports only files listed below it):

- app.py: `create_app(settings)`, the FastAPI app: routers, middleware, error handlers.
- routes/: one router per area, HTTP only: events.py, messaging.py, streaming.py,
  control.py (status, list, cancel, resume), live.py (SSE), websocket.py, health.py,
  metrics.py, dashboard.py (the page at /), apidocs.py (/docs and /redoc offline),
  mailbox.py, requests.py (request/reply), timeline.py.
- runtime.py: DBOS's configuration and lifespan, with the live hub and takeover.
- live/: live push and waiting event reads, from state shared per watched workflow.
- takeover.py: a surviving server finishes a dead server's workflows (Postgres locks).
- service.py: what routes share: start once under an ID, look a workflow up, describe it.
- timeline.py: a workflow's timeline, built from DBOS's records (no HTTP).
- workflows.py: the demo workflows: events, messaging, streaming, and the request/reply
  service (no HTTP).
- auth.py (API keys, tenants), errors.py (failures as JSON answers, the DBOS call bound),
  limits.py (body size, waits per client), params.py (bounded inputs), logs.py, metrics.py.
- dbos_internals.py: every use of DBOS beyond its public API, in one place.
- models.py, models_mailbox.py (request and response bodies), settings.py (`Settings`),
  names.py (every event key, topic, stream key, status and bound).
- client/: the Python clients (they use only the models and names.py of the server's code).
- static/: the dashboard's page and scripts.
"""

__version__ = "1.0.0"
