"""One router per area: events, messaging, streaming, workflows, health."""
