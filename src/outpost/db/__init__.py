"""Persistence: engine, portable types, tables, repositories (flush, never commit), migrations."""
