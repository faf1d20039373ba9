"""Test and benchmark support shared by ``tests/`` and ``bench/`` that knows no Discord:
:mod:`campfire.testing.openai_fake` (a controllable OpenAI-compatible server on loopback). The bot's
harness is :mod:`bot.testing`."""
