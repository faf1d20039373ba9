"""Command names and descriptions in English (the source strings) and Simplified Chinese.

discord.py's :class:`app_commands.Translator` is asked, at sync time, for every command/group/option/
choice name and description; it answers from :data:`TRANSLATIONS`, a plain table keyed by the
English string. Cogs add their own strings at import time with :func:`register`::

    from bot.i18n import register
    register({"story": "故事", "Write a short story about your theme": "根据你的主题写一个短篇故事"})

Names must follow Discord's rules (lower case, no spaces, ≤ 32 characters); descriptions ≤ 100.
A string without a translation falls back to English (the translator returns ``None``).
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

log = logging.getLogger(__name__)

ZH = discord.Locale.chinese.value  # "zh-CN"

#: English string -> {locale: translation}. Add with :func:`register`; read by :class:`CampfireTranslator`.
TRANSLATIONS: dict[str, dict[str, str]] = {}


def register(table: dict[str, str], locale: str = ZH) -> None:
    """Add translations (English string -> translated string) for ``locale`` (default ``zh-CN``).
    Raises ``ValueError`` for an empty translation."""
    for english, translated in table.items():
        if not translated or not translated.strip():
            raise ValueError(f"empty translation for {english!r}")
        TRANSLATIONS.setdefault(english, {})[locale] = translated


# Names of every command, group, option and choice the issue defines (descriptions are registered
# by each cog next to the command, so they cannot drift apart).
register(
    {
        # /story
        "story": "故事",
        "theme": "主题",
        "genre": "类型",
        "length": "篇幅",
        "language": "语言",
        "short": "短篇",
        "medium": "中篇",
        "long": "长篇",
        "auto": "自动",
        "English": "英语",
        "中文": "中文",
        # /recommend
        "recommend": "推荐",
        "subscribe": "订阅",
        "unsubscribe": "取消订阅",
        # /campfire (admin)
        "campfire": "篝火",
        "settings": "设置",
        "status": "状态",
        # /privacy
        "privacy": "隐私",
        "optout": "停止记录",
        "forget": "删除我的数据",
        "export": "导出我的数据",
        # /help
        "help": "帮助",
    }
)


class CampfireTranslator(app_commands.Translator):
    """Answers from :data:`TRANSLATIONS`; ``None`` (= keep English) for anything not in it."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        table = TRANSLATIONS.get(string.message)
        if not table:
            return None
        translated = table.get(locale.value)
        if translated is None:
            return None
        if context.location in (
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
        ):
            translated = translated.lower().replace(" ", "_")[:32]
        elif len(translated) > 100:
            log.warning("translation of %r for %s is over 100 characters; cut", string.message, locale.value)
            translated = translated[:100]
        return translated
