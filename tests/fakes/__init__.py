"""Loopback stand-ins for external services, used only where a test needs controlled behaviour."""
