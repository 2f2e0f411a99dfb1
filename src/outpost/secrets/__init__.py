"""Secrets at rest: AES-GCM under a master key that never leaves the server's host."""
