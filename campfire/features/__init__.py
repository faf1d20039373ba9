"""The application core: one home per use case, shared by every front end (the Discord cogs in
``bot/``, the terminal console, the CLI). Never imports ``discord``.

Each module holds plain async functions taking the :class:`campfire.app.App` first; what they return
is typed in :mod:`campfire.features.types`. Front ends adapt their inputs to one call and render the
result; policy (who may do what, what is saved, what is shown to whom) lives here.

- :mod:`~campfire.features.stories` — tell / continue / regenerate / rate; the one story save.
- :mod:`~campfire.features.chat` — the persona for a channel and a streamed reply.
- :mod:`~campfire.features.picks` — picks now, feedback on a pick, daily-post subscription.
- :mod:`~campfire.features.digest` — which guilds are due, the run, marking posted, retry policy.
- :mod:`~campfire.features.recording` — the event queue: messages, edits, deletions, reactions,
  members and channels as plain records, written in batches through the recommender.
- :mod:`~campfire.features.privacy` — opt-out / opt-in, export, forget.
- :mod:`~campfire.features.guilds` — typed guild settings and their one validator.
- :mod:`~campfire.features.text` — titles, clips and pick lines for every front end.
"""
