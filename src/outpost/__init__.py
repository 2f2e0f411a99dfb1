"""Outpost: a self-hostable control plane for running AI coding agents as a fleet."""

__version__ = "0.1.0"
