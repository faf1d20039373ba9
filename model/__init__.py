"""Generation: the prepared model, prompts, story and chat pipelines, the OpenAI-compatible client,
and supervision of the generator server. Never imports discord or recsys."""
