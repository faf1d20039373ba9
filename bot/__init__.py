"""Campfire's Discord front end: the only package that imports discord.

``bot.app`` (the bot, ``campfire bot``), ``bot.cogs`` (one cog per concern), ``bot.messages``
(splitting, sanitising, streaming edits), ``bot.errors`` (app-command errors), ``bot.i18n``
(English + Simplified Chinese command strings), ``bot.views`` (persistent buttons).
"""
