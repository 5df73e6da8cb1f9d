"""Outbound webhooks: workflow events POSTed to registered URLs, signed and retried.

- store.py: the registrations and the dispatcher's cursors (tables of this project's own).
- dispatcher.py: finds events in DBOS's records and starts one delivery per webhook.
- delivery.py: the delivery workflow (DBOS): signed POSTs, durable backoff, at-least-once.
- targets.py: which URLs are allowed, and the checked address each attempt connects to.
- models.py: the request and response bodies, and the event types.
The routes are in routes/webhooks.py.
"""
