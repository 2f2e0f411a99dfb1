"""Repositories: statements on a connection the caller's transaction owns. They never commit."""
