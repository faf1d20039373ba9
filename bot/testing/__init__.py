"""Driving a real Campfire bot without Discord, for tests and benchmarks (needs the ``test`` extra:
dpytest, pytest): :mod:`bot.testing.harness` (a started bot on dpytest with real interactions) and
:mod:`bot.testing.discord_http` (what the bot sends to Discord, recorded). It lives in ``bot/`` —
the one package that knows Discord — so that ``bench/`` can use it without importing ``tests/``."""
