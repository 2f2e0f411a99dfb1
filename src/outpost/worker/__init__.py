"""Running dispatches: the queue seam, the runner of one dispatch, restart reconciliation."""
