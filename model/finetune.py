"""``campfire model finetune``: LoRA (``peft``) on the prepared model with a community's well-rated
stories, merged into a new model folder that ``campfire serve`` can load.

The run: refuse with too few stories (:mod:`model.finetune_guard`) → split off a held-out share by id
hash → tokenise as ``/story`` examples (:mod:`model.finetune_data`) → estimate memory and refuse when it
does not fit → wrap the base model with LoRA adapters on every attention and MLP projection → resume
from a checkpoint of the same run if there is one (:mod:`model.finetune_ckpt`) → held-out loss before
→ AdamW steps (``batch_size`` examples per step, one at a time: no padding), a progress bar with loss
and tokens/s, a checkpoint every ``checkpoint_every`` steps and on Ctrl-C → held-out loss after →
adapter merged and written with a card (:mod:`model.finetune_merge`).

Training runs in bf16 autocast where the device computes bf16 natively (CUDA; CPUs with AMX or
AVX-512 BF16), else in float32; on the CPU with :func:`model.finetune_guard.free_cores` threads.
Held-out scoring is always float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model import finetune_ckpt as ckpt
from model.finetune_data import Example, Story, encode, fingerprint, split
from model.finetune_guard import (
    MIN_STORIES,
    FinetuneRefused,
    MemoryEstimate,
    check_memory,
    check_story_count,
    estimate_memory,
    free_cores,
    gib,
    resolve_device,
)
from model.finetune_loop import Trainer
from model.finetune_merge import write_merged
from model.perplexity import mean_loss

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class FinetuneConfig:
    """A run's settings. ``base``: the model folder to tune; ``out``: the folder to write (its parent
    also holds the hidden work folder ``.NAME.finetune`` with the checkpoint). ``epochs`` passes over
    the training stories, capped by ``max_steps`` optimizer steps; ``batch_size`` stories per step;
    ``max_length`` tokens per story (prompt + answer; longer answers are cut); ``lora_layers``: adapt
    only the top N transformer layers (None = all; fewer = a cheaper backward pass); ``eval_limit``:
    held-out stories scored before and after (None = all)."""

    base: Path
    out: Path
    epochs: float = 1.0
    max_steps: int | None = None
    lora_r: int = 16
    lora_alpha: int | None = None  # None = 2 × lora_r
    lora_dropout: float = 0.0
    lora_layers: int | None = None
    learning_rate: float = 1e-3
    warmup_steps: int = 5
    batch_size: int = 4
    max_length: int = 512
    held_out_share: float = 0.1
    min_stories: int = MIN_STORIES
    checkpoint_every: int = 10
    log_every: int = 5
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    restart: bool = False
    eval_limit: int | None = 32

    @property
    def work(self) -> Path:
        """The hidden folder of this run's checkpoint, beside ``out``."""
        return self.out.with_name(f".{self.out.name}.finetune")


@dataclass
class FinetuneResult:
    """What a finished run wrote: ``out`` (the merged folder), its ``card`` (dict, as in
    ``campfire-finetune.json``), ``resumed_from`` (the step a checkpoint resumed at; 0 = fresh)."""

    out: Path
    card: dict[str, Any]
    resumed_from: int = 0


@dataclass
class Prepared:
    """A run ready to train: data, model, tokenizer and the figures printed before it starts."""

    train: list[Example]
    held_out: list[Example]
    model: Any
    tokenizer: Any
    device: str
    bf16: bool
    threads: int
    memory: MemoryEstimate
    available: int | None
    total_steps: int
    key: str


class FinetuneCancelled(Exception):
    """Ctrl-C during a run: ``step`` of ``total`` done, the checkpoint at ``checkpoint`` (run the same
    command again to resume)."""

    def __init__(self, step: int, total: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step} of {total}; checkpoint saved in {checkpoint}")
        self.step, self.total, self.checkpoint = step, total, checkpoint


def _encode_all(tokenizer: Any, stories: list[Story], max_length: int) -> list[Example]:
    try:
        return [encode(tokenizer, s, max_length) for s in stories]
    except ValueError as err:
        raise FinetuneRefused(f"{err}; raise --max-length") from None


def _lora_model(model: Any, config: FinetuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    layers = model.config.num_hidden_layers
    chosen = None if config.lora_layers is None else list(range(max(0, layers - config.lora_layers), layers))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha or 2 * config.lora_r, lora_dropout=config.lora_dropout,
                      target_modules=LORA_TARGETS, layers_to_transform=chosen, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question; nothing for the user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def _memory(model: Any, config: FinetuneConfig) -> MemoryEstimate:
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return estimate_memory(params=total - lora, lora_params=lora, layers=c.num_hidden_layers, hidden=c.hidden_size,
                           heads=c.num_attention_heads, vocab=c.vocab_size, batch_size=1, max_length=config.max_length)


def run_settings(config: FinetuneConfig, data: str) -> dict[str, Any]:
    """What makes two runs the same (hashed into the checkpoint key): not ``epochs``/``max_steps`` (a
    resumed run may go further), not the device or threads."""
    keep = ("lora_r", "lora_alpha", "lora_dropout", "lora_layers", "learning_rate", "warmup_steps", "batch_size",
            "max_length", "held_out_share", "seed")
    return {"base": str(Path(config.base).resolve()), "data": data, **{k: getattr(config, k) for k in keep}}


def prepare(stories: list[Story], config: FinetuneConfig, *, source: str = "the selection",
            trainable: Collection[str] | None = None) -> Prepared:
    """Check, split, tokenise, load and wrap: everything before the first step. ``trainable``: ids of the
    stories that may be trained on (None = all; e.g. those whose text matches their theme); the
    held-out split is made before and never filtered, so it is the same whatever ``trainable`` is.
    Raises :class:`model.finetune_guard.FinetuneRefused` (too few stories, not enough memory), OSError
    (no model in ``config.base``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_story_count(len(stories), config.min_stories, source=source)
    train_stories, held_stories = split(stories, config.held_out_share)
    if trainable is not None:
        kept = [s for s in train_stories if s.id in trainable]
        if len(kept) + len(held_stories) < config.min_stories:
            raise FinetuneRefused(
                f"only {len(kept)} of the {len(train_stories)} stories to train on match their theme; fine-tuning "
                f"needs at least {config.min_stories} stories (lower --theme-match, or 0 to keep them all)")
        train_stories = kept
    device, bf16 = resolve_device(config.device)
    threads = config.threads or free_cores()
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    if config.restart:
        ckpt.discard(config.work)
    tokenizer = AutoTokenizer.from_pretrained(config.base)
    train = _encode_all(tokenizer, train_stories, config.max_length)
    held = _encode_all(tokenizer, held_stories, config.max_length)[: config.eval_limit]
    model = AutoModelForCausalLM.from_pretrained(config.base, dtype=torch.float32)
    model.config.use_cache = False
    model = _lora_model(model, config)
    memory = _memory(model, config)
    available = check_memory(memory, device)
    model = model.to(device)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.max_steps:
        total = min(total, config.max_steps)
    key = ckpt.run_key(run_settings(config, fingerprint(train + held)))
    return Prepared(train=train, held_out=held, model=model, tokenizer=tokenizer, device=device, bf16=bf16,
                    threads=threads, memory=memory, available=available, total_steps=total, key=key)


def describe(p: Prepared) -> str:
    """The lines printed before training: data, device, memory estimate, steps."""
    trainable = sum(x.numel() for x in p.model.parameters() if x.requires_grad)
    cut = sum(ex.truncated for ex in p.train)
    free = f", {gib(p.available)} available" if p.available is not None else ""
    tokens = sum(ex.tokens for ex in p.train)
    precision = "bf16 autocast" if p.bf16 else "float32"
    return "\n".join([
        f"stories: {len(p.train)} to train on ({tokens} answer tokens, {cut} cut at max length), {len(p.held_out)} held out",
        f"device: {p.device} ({precision}), {p.threads} threads; LoRA parameters: {trainable:,}",
        (f"memory estimate: {gib(p.memory.total)} (weights {gib(p.memory.weights)}, activations "
         f"{gib(p.memory.activations)}, logits {gib(p.memory.logits)}){free}"),
        f"steps: {p.total_steps}",
    ])


def finetune(p: Prepared, config: FinetuneConfig, *, card_data: dict[str, Any], progress: bool = True,
             on_message: Callable[[str], None] = print, credits: list[dict[str, str]] | None = None) -> FinetuneResult:
    """Train the prepared run (resuming a checkpoint of the same run unless ``config.restart``), merge and
    write ``config.out`` with its card (``card_data``: the ``data`` section — source, min_rating, licence).
    Raises :class:`FinetuneCancelled` on Ctrl-C once a checkpoint exists (during training it saves one
    first; the last one is kept while scoring and writing), KeyboardInterrupt before that (nothing to
    resume), :class:`model.finetune_ckpt.CheckpointMismatch` when the work folder holds another run's
    checkpoint."""
    trainer = Trainer(p.model, p.train, config, total_steps=p.total_steps, device=p.device, bf16=p.bf16)
    state = ckpt.load(config.work, p.key, p.model, trainer.optimizer, trainer.scheduler) or ckpt.TrainState()
    resumed = state.step

    def save(s: ckpt.TrainState = state) -> Path:
        return ckpt.save(config.work, p.key, s, p.model, trainer.optimizer, trainer.scheduler)

    if resumed:
        on_message(f"resuming from the checkpoint at step {resumed} of {p.total_steps}")
    pad = p.tokenizer.pad_token_id if p.tokenizer.pad_token_id is not None else p.tokenizer.eos_token_id
    if state.held_out_before is None:
        on_message(f"scoring {len(p.held_out)} held-out stories before training…")
        state.held_out_before, _ = mean_loss(p.model, p.held_out, pad_id=pad)
        save()
    try:
        try:
            trainer.run(state, progress=progress, on_checkpoint=save)
        finally:  # also on Ctrl-C: the weights and ``state`` agree after every step
            save()
        on_message(f"scoring {len(p.held_out)} held-out stories after training…")
        after, tokens = mean_loss(p.model, p.held_out, pad_id=pad)
        card = build_card(p, config, state, card_data=card_data, after=after, tokens=tokens)
        write_merged(p.model, p.tokenizer, config.out, card, credits)
    except KeyboardInterrupt:
        raise FinetuneCancelled(state.step, p.total_steps, config.work / ckpt.CHECKPOINT) from None
    ckpt.discard(config.work)
    return FinetuneResult(out=config.out, card=card, resumed_from=resumed)


def build_card(p: Prepared, config: FinetuneConfig, state: ckpt.TrainState, *, card_data: dict[str, Any],
               after: float, tokens: int) -> dict[str, Any]:
    """The card (see :mod:`model.finetune_merge`): base, data counts, hyper-parameters, held-out loss and
    perplexity before/after, steps, time per step, loss curve, device, date (UTC, ISO 8601)."""
    hp = {k: v for k, v in asdict(config).items() if k in ckpt_hp_keys()}
    before = state.held_out_before
    return {
        "name": config.out.name, "base": str(config.base),
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "data": {**card_data, "train": len(p.train), "held_out": len(p.held_out), "held_out_share": config.held_out_share,
                 "train_tokens": sum(ex.tokens for ex in p.train)},
        "hyperparameters": {**hp, "lora_alpha": config.lora_alpha or 2 * config.lora_r, "steps": p.total_steps},
        "held_out": {"texts": len(p.held_out), "tokens": tokens, "loss_before": before, "loss_after": after,
                     "perplexity_before": math.exp(before) if before is not None else None,
                     "perplexity_after": math.exp(after)},
        "steps": state.step, "train_seconds": round(state.seconds, 1), "tokens_trained": state.tokens,
        "seconds_per_step": round(state.seconds / state.step, 2) if state.step else None,
        "loss_curve": state.history, "device": p.device, "threads": p.threads,
    }


def ckpt_hp_keys() -> tuple[str, ...]:
    """The hyper-parameters written to the card."""
    return ("epochs", "max_steps", "lora_r", "lora_dropout", "lora_layers", "learning_rate", "warmup_steps",
            "batch_size", "max_length", "seed")
