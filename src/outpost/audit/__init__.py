"""The audit log: append-only rows, each sealed with a MAC that covers the row before it (decision 0015)."""
