"""Per-token loss and perplexity of a causal LM on stories in the ``/story`` format
(``campfire model perplexity``; also the held-out loss of ``campfire model finetune``).

The loss is the mean cross-entropy (nats) over the *answer* tokens of each example (title, blank line,
story, end of turn — :func:`model.finetune_data.encode`), the prompt excluded: the same tokens the
fine-tuning trains on. Perplexity = ``exp(loss)``. Both models of a comparison must be scored on the
same texts with the same ``max_length``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.finetune_data import IGNORE_INDEX, Example, Story, collate, encode

DEFAULT_MAX_LENGTH = 512  # tokens per example (prompt + answer); the finetune's default too


@dataclass(frozen=True)
class PerplexityResult:
    """``model``: the folder scored; ``texts``: examples; ``tokens``: answer tokens scored; ``loss``:
    mean per-token cross-entropy (nats); ``perplexity``: ``exp(loss)``; ``seconds``: wall time."""

    model: str
    texts: int
    tokens: int
    loss: float
    perplexity: float
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """``{"model", "texts", "tokens", "loss", "perplexity"}`` (what ``--json`` prints)."""
        d = asdict(self)
        d.pop("seconds")
        return d


def loss_sum(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """``(sum of token losses, number of tokens)`` of a collated batch (:func:`collate`): cross-entropy in
    float32 of each labelled token given the tokens before it. Logits are computed only from the first
    labelled position on (``logits_to_keep``: the prompt's logits are never needed), which saves most of
    the vocabulary projection on long prompts. The sum keeps its graph (call ``backward`` on it to train)."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    width = labels.shape[1]
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if labelled.numel() == 0:
        return torch.zeros((), requires_grad=False), 0
    first = int(labelled[0])  # earliest position with a label, over the batch
    keep = width - first + 1  # logits of positions first-1 … width-1 predict tokens first … width
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    target = labels[:, first:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((target != IGNORE_INDEX).sum())


def mean_loss(model: Any, examples: Sequence[Example], *, pad_id: int, batch_size: int = 1,
              on_batch: Callable[[int], None] | None = None) -> tuple[float, int]:
    """``(mean per-token loss in nats, tokens)`` of ``model`` on ``examples``, in inference mode on the
    model's device (the model is put in eval mode and back). ``on_batch(n)`` after each batch of ``n`` examples.
    Returns ``(nan, 0)`` for no tokens."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                chunk = list(examples[start:start + batch_size])
                s, n = loss_sum(model, {k: v.to(device) for k, v in collate(chunk, pad_id).items()})
                total, tokens = total + float(s), tokens + n
                if on_batch:
                    on_batch(len(chunk))
    finally:
        model.train(was_training)
    return (total / tokens if tokens else math.nan), tokens


def load_model(folder: str | Path, *, dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a transformers folder, on the CPU in ``dtype`` (float32 by default: the
    prepared folders are bf16; scoring upcast keeps the comparison exact across models).
    Raises OSError when the folder holds no model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    return model.eval(), tokenizer


def perplexity(folder: str | Path, stories: Sequence[Story], *, max_length: int = DEFAULT_MAX_LENGTH,
               progress: bool = False, threads: int | None = None) -> PerplexityResult:
    """Score the model in ``folder`` on ``stories`` (each encoded as :func:`encode` does with
    ``max_length`` tokens at most): see :class:`PerplexityResult`. ``progress``: a tqdm bar on stderr.
    ``threads``: torch threads (default :func:`model.finetune_guard.free_cores`: on this shared 2-core
    CPU a 256-token forward took 0.7 s with 1 thread and 1.8–6.8 s with 2, measured side by side).
    Raises ValueError for no stories, OSError for a folder without a model."""
    if not stories:
        raise ValueError("no texts to score")
    import torch
    from tqdm import tqdm

    from model.finetune_guard import free_cores

    t0 = time.perf_counter()
    torch.set_num_threads(threads or free_cores())
    model, tokenizer = load_model(folder)
    examples = [encode(tokenizer, s, max_length) for s in stories]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tqdm(total=len(examples), desc="scoring", unit="text", disable=not progress) as bar:
        loss, tokens = mean_loss(model, examples, pad_id=pad, on_batch=bar.update)
    return PerplexityResult(model=str(folder), texts=len(examples), tokens=tokens, loss=loss,
                            perplexity=math.exp(loss) if tokens else math.nan, seconds=time.perf_counter() - t0)
