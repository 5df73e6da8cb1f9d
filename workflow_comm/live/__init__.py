"""Live push: one shared reader per watched workflow, fanned out to every subscriber.

- items.py: what flows from a reader to its subscribers.
- database.py: the reads the live readers need beyond DBOS's public API, and Postgres wakeups.
- feed.py: one workflow's readers (status, events, streams) and its subscribers.
- hub.py: the registry of feeds, the connection cap and shutdown.
- finished.py: tells waiting event reads that their workflow finished.
"""
