"""Re-export of :mod:`campfire.testing.openai_fake` (the loopback OpenAI-compatible stand-in), kept so
existing ``from tests.fakes.openai_server import FakeOpenAI`` imports keep working. New code — and
anything outside ``tests/`` such as ``bench/`` — imports :mod:`campfire.testing.openai_fake`."""

from campfire.testing.openai_fake import DEFAULT_REPLY, FakeOpenAI, free_port

__all__ = ["DEFAULT_REPLY", "FakeOpenAI", "free_port"]
