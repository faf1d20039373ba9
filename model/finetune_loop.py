"""The training loop of ``campfire model finetune``: AdamW on the LoRA weights, linear warm-up then
linear decay to a tenth of the learning rate, ``batch_size`` stories per step taken one at a time
(gradients accumulated; the step's loss is the mean over all its answer tokens), a tqdm bar with the
loss and tokens/s, and a checkpoint callback every ``checkpoint_every`` steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from model.finetune_ckpt import TrainState
from model.finetune_data import Example, batches, collate
from model.perplexity import loss_sum

FINAL_LR_SHARE = 0.1  # the learning rate decays linearly to this share of its peak at the last step


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup`` steps, then linear decay to :data:`FINAL_LR_SHARE` at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    return 1.0 - (1.0 - FINAL_LR_SHARE) * min(1.0, (step - warmup) / span)


class Trainer:
    """Steps ``model`` (a peft model: only LoRA weights require grad) over ``examples``.
    ``config``: a :class:`model.finetune.FinetuneConfig` (learning_rate, warmup_steps, batch_size, seed,
    checkpoint_every, log_every)."""

    def __init__(self, model: Any, examples: list[Example], config: Any, *, total_steps: int, device: str, bf16: bool):
        import torch

        self.model, self.examples, self.config = model, examples, config
        self.total, self.device, self.bf16 = total_steps, device, bf16
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup=config.warmup_steps, total=total_steps))
        self.pad_id = 0

    def _step(self, batch: list[Example]) -> tuple[float, int]:
        """One optimizer step over ``batch``; returns ``(mean token loss, tokens)``."""
        import contextlib

        import torch

        tokens = sum(ex.tokens for ex in batch)
        total = 0.0
        autocast = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        for ex in batch:
            inputs = {k: v.to(self.device) for k, v in collate([ex], self.pad_id).items()}
            with autocast:
                loss, _ = loss_sum(self.model, inputs)
            (loss / tokens).backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / max(tokens, 1), tokens

    def _next_batches(self, state: TrainState):
        """The remaining batches from ``state``'s position (epoch, batch), epoch after epoch."""
        epoch, skip = state.epoch, state.batch
        while True:
            for i, batch in enumerate(batches(self.examples, self.config.batch_size, seed=self.config.seed, epoch=epoch)):
                if i >= skip:
                    yield epoch, i, batch
            epoch, skip = epoch + 1, 0

    def run(self, state: TrainState, *, progress: bool = True, on_checkpoint: Callable[[TrainState], Any] | None = None) -> TrainState:
        """Train from ``state`` until ``total_steps``, updating ``state`` in place after every step (so a
        KeyboardInterrupt leaves it consistent with the model). Returns ``state``."""
        from tqdm import tqdm

        self.model.train()
        logged_loss, logged_tokens = 0.0, 0
        with tqdm(total=self.total, initial=state.step, desc="fine-tuning", unit="step", disable=not progress) as bar:
            for epoch, index, batch in self._next_batches(state):
                if state.step >= self.total:
                    break
                t0 = time.perf_counter()
                loss, tokens = self._step(batch)
                spent = time.perf_counter() - t0
                state.step, state.epoch, state.batch = state.step + 1, epoch, index + 1
                state.tokens, state.seconds = state.tokens + tokens, state.seconds + spent
                logged_loss, logged_tokens = logged_loss + loss * tokens, logged_tokens + tokens
                if state.step % self.config.log_every == 0 or state.step == self.total:
                    state.history.append([state.step, round(logged_loss / max(logged_tokens, 1), 4)])
                    logged_loss, logged_tokens = 0.0, 0
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / spent:.0f}")
                bar.update(1)
                if on_checkpoint and state.step % self.config.checkpoint_every == 0 and state.step < self.total:
                    on_checkpoint(state)
        return state
