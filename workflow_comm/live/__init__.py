"""Live push: shared state per watched workflow, read in batches, fanned out to every watcher.

- items.py: what flows from a feed to its subscribers.
- frames.py: each item encoded once, as an SSE frame and a WebSocket frame.
- database.py: the batched reads (one query for all watched workflows), Postgres wakeups.
- feed.py: one workflow's shared state (status, events, streams), subscribers and waiters;
  a waiting subscriber is written to by the feed itself.
- eager.py: a write run at once, becoming a task only if it has to wait.
- hub.py: the registry of feeds, the readers that serve them all, the connection cap and
  shutdown.
"""
