"""Live dispatch events: the bus that wakes readers, shared rings of recent events, and SSE streams."""
