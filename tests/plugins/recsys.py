"""Shared recsys fixtures (session-scoped real models load once)."""
