"""Shared generator fixtures (session-scoped real models load once)."""
