"""The bot test harness now lives in :mod:`bot.testing.harness` (so benchmarks can use it
without importing tests); this module keeps the old import path working."""

from bot.testing.harness import BotHarness, merge_settings, start_bot  # noqa: F401
from bot.testing.discord_http import (  # noqa: F401
    ATTACHMENT_SIZE_LIMIT,
    Invocation,
    InteractionRecorder,
    Sent,
    SentLog,
    snowflake,
)
