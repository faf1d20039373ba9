"""Campfire: the command line, settings and console front end over `model/` and `recsys/`."""

__version__ = "0.1.0"
