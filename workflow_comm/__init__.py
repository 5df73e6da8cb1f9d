"""Reference server for DBOS workflow communication: events, messaging and streaming."""

__version__ = "1.0.0"
