"""``campfire model finetune`` / ``perplexity`` on the real SmolLM2 and real SCP tales (examples/,
CC BY-SA 3.0, see examples/README.md): a few tiny steps (short max length, LoRA on the top layers only,
one thread) so the file runs in tens of seconds.

Covered: training lowers the loss on the tales it trains on and changes the weights; Ctrl-C saves a
checkpoint and the same command resumes it to the very weights of an uninterrupted run; the merged
folder is served by ``campfire serve --model NAME``; opted-out and forgotten members' stories and
votes never reach the training data of ``--guild``; too few stories → a clear refusal; ``perplexity
--json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
from pathlib import Path

import httpx
import pytest

from campfire.cli import main
from model.finetune import FinetuneCancelled, FinetuneConfig, finetune, prepare
from model.finetune_ckpt import CHECKPOINT, TrainState
from model.finetune_data import Story, read_stories
from model.finetune_loop import Trainer
from model.perplexity import mean_loss
from tests.model.serving import campfire_serve

ROOT = Path(__file__).resolve().parents[2]
TALES = ROOT / "examples" / "scp_tales.jsonl"
MODEL_NAME = "tuned-tales"


@pytest.fixture(scope="module")
def tales() -> list[Story]:
    return read_stories(TALES)[:5]


def tiny(base: Path, out: Path, **overrides) -> FinetuneConfig:
    """A run of seconds: ~30 answer tokens per tale, LoRA on the top 2 layers, one thread (deterministic)."""
    settings = {"max_length": 160, "batch_size": 1, "lora_layers": 2, "learning_rate": 3e-3, "warmup_steps": 0,
                "held_out_share": 0.25, "min_stories": 3, "threads": 1, "max_steps": 4, "epochs": 2, "checkpoint_every": 2,
                "log_every": 1, "eval_limit": 2}
    return FinetuneConfig(base=base, out=out, **{**settings, **overrides})


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def tuned(prepared_model: Path, tales, tmp_path_factory) -> Path:
    """One uninterrupted tiny run, written as data/models/tuned-tales of a temporary data dir."""
    out = tmp_path_factory.mktemp("finetune") / "data" / "models" / MODEL_NAME
    config = tiny(prepared_model, out)
    finetune(prepare(tales, config), config, card_data={"source": "test"}, progress=False, on_message=quiet)
    return out


def lora_weights(model) -> dict[str, object]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_a_few_steps_change_the_weights_and_lower_the_loss_on_those_tales(prepared_model, tales, tmp_path):
    config = tiny(prepared_model, tmp_path / "out", held_out_share=0.0, max_steps=6)
    p = prepare(tales[:3], config)
    pad = p.tokenizer.eos_token_id
    before, tokens = mean_loss(p.model, p.train, pad_id=pad)
    start = lora_weights(p.model)
    state = Trainer(p.model, p.train, config, total_steps=6, device="cpu", bf16=False).run(TrainState(), progress=False)
    after, _ = mean_loss(p.model, p.train, pad_id=pad)
    changed = [n for n, w in lora_weights(p.model).items() if not (w == start[n]).all()]
    assert state.step == 6 and tokens > 60
    assert changed, "no LoRA weight moved"
    assert after < before - 0.1, (before, after)


@pytest.mark.slow
def test_ctrl_c_keeps_a_checkpoint_and_the_same_run_resumes_to_the_uninterrupted_weights(
        prepared_model, tales, tmp_path, tuned, monkeypatch):
    from safetensors.torch import load_file

    out = tmp_path / "data" / "models" / "resumed"
    config = tiny(prepared_model, out)
    original, calls = Trainer._step, []

    def step_then_ctrl_c(self, batch):
        calls.append(1)
        if len(calls) == 3:  # a real SIGINT in the middle of the third step
            signal.raise_signal(signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_step", step_then_ctrl_c)
    with pytest.raises(FinetuneCancelled) as cancelled:
        finetune(prepare(tales, config), config, card_data={"source": "test"}, progress=False, on_message=quiet)
    assert cancelled.value.step == 2 and (config.work / CHECKPOINT).is_file() and not out.exists()

    monkeypatch.setattr(Trainer, "_step", original)
    messages: list[str] = []
    result = finetune(prepare(tales, config), config, card_data={"source": "test"}, progress=False, on_message=messages.append)
    assert result.resumed_from == 2 and any("resuming from the checkpoint at step 2" in m for m in messages)
    assert result.card["steps"] == 4 and [s for s, _ in result.card["loss_curve"]] == [1, 2, 3, 4]
    assert not config.work.exists()  # the checkpoint goes once the model is written
    resumed, straight = load_file(out / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all((resumed[k] == straight[k]).all() for k in straight)
    base = load_file(prepared_model / "model.safetensors")
    assert any(not (base[k] == straight[k]).all() for k in straight)  # the adapter was merged in


@pytest.mark.slow
def test_the_card_says_what_was_tuned_on_what(tuned, prepared_model):
    card = json.loads((tuned / "campfire-finetune.json").read_text())
    assert card["base"] == str(prepared_model) and card["data"]["train"] + card["data"]["held_out"] == 5
    assert card["hyperparameters"]["lora_r"] == 16 and card["hyperparameters"]["max_length"] == 160
    held = card["held_out"]
    assert held["texts"] >= 1 and held["perplexity_after"] == pytest.approx(math.exp(held["loss_after"]))
    assert "Held-out loss" in (tuned / "README.md").read_text()
    config = json.loads((tuned / "config.json").read_text())
    assert config == json.loads((prepared_model / "config.json").read_text())  # served exactly like the base


@pytest.mark.slow
def test_campfire_serve_model_serves_the_merged_folder(tuned):
    """``campfire serve --model NAME`` (a name under data/models) loads the tuned folder and answers."""
    with campfire_serve(tuned.parent.parent, MODEL_NAME, args=("-q",)) as served:
        assert Path(served["model"]).resolve() == tuned.resolve()
        body = {"model": served["model"], "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
        reply = httpx.post(served["url"] + "/v1/chat/completions", json=body, timeout=120).json()
        assert reply["choices"][0]["message"]["content"].strip()


def test_too_few_stories_is_a_clear_refusal(prepared_model, tmp_path, capsys):
    three = tmp_path / "three.jsonl"
    three.write_text("".join(line for line in TALES.open(encoding="utf-8").readlines()[:3]), encoding="utf-8")
    rc = main(["model", "finetune", "--items", str(three), "--base", str(prepared_model), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "file three.jsonl has only 3 stories to train on; fine-tuning needs at least 20" in err
    assert not (tmp_path / "d" / "models").exists()


def test_perplexity_json(prepared_model, capsys):
    rc = main(["model", "perplexity", "--model", str(prepared_model), "--texts", str(TALES), "--limit", "2",
               "--max-length", "160", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and set(out) == {"model", "texts", "tokens", "loss", "perplexity"}
    assert out["texts"] == 2 and out["tokens"] > 20 and out["perplexity"] == pytest.approx(math.exp(out["loss"]))


# ---- --guild: whose stories may be trained on ------------------------------------------------------------
G = 4242
WRITER, OPTED_OUT, FORGOTTEN, VOTER, LATE_OPT_OUT = 1, 2, 3, 4, 5


@contextlib.asynccontextmanager
async def offline_app(settings, embedder):
    from campfire.app import App
    from model.tokens import TokenCounter
    from recsys.service import Recommender
    from recsys.store import Store

    store = await Store.open(settings.db_path)
    recommender = Recommender(store, embedder, settings)
    await recommender.start()
    try:
        yield App(settings=settings, store=store, recommender=recommender, generator=None, counter=TokenCounter(None))
    finally:
        await recommender.aclose()
        await store.close()


async def _story(app, member_id: int, title: str, *voters: int) -> int:
    from campfire.features import stories
    from campfire.features.types import Member
    from model.story import StoryResult

    plan = stories.plan(app, f"a theme for {title}")
    result = StoryResult(title=title, text=f"{title}: once upon a time by the fire.", language="en", prompt_tokens=90,
                         completion_tokens=12, ttft_s=0.1, total_s=1.0)
    saved = await stories.save(app, plan, result, requester=Member(guild_id=G, id=member_id))
    for voter in voters:
        assert await stories.rate(app, saved.item_id, voter, "up") == "rated"
    return saved.item_id


async def test_opted_out_and_forgotten_members_and_nsfw_items_never_enter_the_training_data(make_settings, embedder, tmp_path):
    from campfire.cmd_finetune import guild_stories
    from campfire.features import privacy
    from recsys.catalogue import import_items

    settings = make_settings()
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text(json.dumps({"id": "loved", "title": "Loved tale", "text": "A tale the wiki loved.", "rating": 50})
                         + "\n" + json.dumps({"id": "panned", "title": "Panned tale", "text": "Nobody liked it.", "rating": -5})
                         + "\n" + json.dumps({"id": "nsfw", "title": "NSFW tale", "text": "Loved, not for all.", "rating": 80,
                                              "nsfw": True}) + "\n", encoding="utf-8")
    async with offline_app(settings, embedder) as app:
        await import_items(app.recommender, catalogue, G, progress=False)
        await _story(app, WRITER, "Kept", VOTER)                   # rated up by a member who may be recorded
        await _story(app, WRITER, "Only late opt-out voted", LATE_OPT_OUT)
        await _story(app, WRITER, "Only forgotten voted", FORGOTTEN)  # items.rating keeps this +1 after the forget
        await _story(app, OPTED_OUT, "By the opted-out member", VOTER, WRITER)
        await _story(app, FORGOTTEN, "By the forgotten member", VOTER, WRITER)
        await _story(app, WRITER, "Not rated")
        await privacy.opt_out(app, OPTED_OUT)
        await privacy.opt_out(app, LATE_OPT_OUT)
        await privacy.forget(app, FORGOTTEN)
        await app.recommender.flush()
        chosen = await guild_stories(settings, G, 0.0)
    assert sorted(s.title for s in chosen) == ["Kept", "Loved tale"]
    assert {s.rating for s in chosen} == {1.0, 50.0}
    assert all("opted-out" not in s.text and "forgotten" not in s.text for s in chosen)


async def test_finetune_guild_refuses_when_too_few_stories_are_rated_up(make_settings, embedder, prepared_model, capsys):
    import asyncio

    settings = make_settings()
    async with offline_app(settings, embedder) as app:
        await _story(app, WRITER, "Kept", VOTER)
        await _story(app, WRITER, "Not rated")
        await app.recommender.flush()
    argv = ["model", "finetune", "--guild", str(G), "--base", str(prepared_model), "--data-dir", str(settings.data_dir)]
    assert await asyncio.to_thread(main, argv) == 2
    assert f"guild {G} has only 1 story to train on; fine-tuning needs at least 20" in capsys.readouterr().err


async def test_campfire_status_names_the_model_that_answers(make_settings, embedder, fake_openai, tmp_path):
    from campfire.features import guilds
    from model.client import GeneratorClient

    tuned = tmp_path / "data" / "models" / MODEL_NAME  # the embedded server's model id is its folder
    settings = make_settings(generator={"url": fake_openai.url, "model_path": str(tuned)})
    async with offline_app(settings, embedder) as app:
        app.generator = GeneratorClient(fake_openai.url, api_key=None, model=str(tuned), settings=settings.generator)
        try:
            status = await guilds.status(app, G)
        finally:
            await app.generator.aclose()
    assert status.index["generator_model"] == MODEL_NAME and status.healthy is True


def test_stories_that_ignore_their_theme_are_not_trained_on(make_settings, prepared_model, tales, tmp_path):
    from campfire.cmd_finetune import on_theme
    from model.finetune_guard import FinetuneRefused

    told = Story(id="told", title="The last night of the lighthouse keeper",
                 text="On his last night the old lighthouse keeper climbed the tower stairs and lit the lamp once more.")
    ignored = Story(id="ignored", title="Lullaby", text="Quarterly revenue rose four percent on strong spreadsheet sales.")
    assert on_theme(make_settings(), [told, ignored], 0.25) == {"told"}
    with pytest.raises(FinetuneRefused, match="only 0 of the 4 stories to train on match their theme"):
        prepare(tales, tiny(prepared_model, tmp_path / "out", min_stories=5), trainable=set())
