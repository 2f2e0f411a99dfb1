"""Sandboxes: where a dispatch's command runs, and how all of its processes are stopped."""
