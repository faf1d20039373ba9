"""Repetition control per request under transformers' continuous batching (``campfire serve``).

transformers 5.24's continuous batching (CB) drops ``RepetitionPenaltyLogitsProcessor`` and has no
frequency/presence penalty at all; its serve layer maps ``frequency_penalty`` onto the dropped
processor and ignores ``presence_penalty``. So nothing countered loops on our own server, while vLLM
and llama.cpp honour all three. :class:`PenaltyProcessor` is a CB logits processor (transformers'
``ContinuousBatchingLogitsProcessor`` protocol: per-request kwargs given to ``add_request``) that
applies, to each request's next-token logits, with vLLM's semantics (``vllm/model_executor/layers/
utils.py: apply_penalties``; the OpenAI API reference for the first two):

- ``repetition_penalty`` r (> 0, 1 = off; CTRL, Keskar et al. 2019, as in transformers' processor):
  for every token already in the prompt or the output, a logit l becomes l / r if l > 0 else l × r;
- ``frequency_penalty`` f and ``presence_penalty`` p (−2..2, 0 = off; OpenAI): for a token that
  occurs c > 0 times in the output so far, l −= c × f + p (the prompt does not count);
- ``greedy`` (temperature 0): every logit but the best becomes −inf, so the sampler that follows
  (CB samples every request) returns the arg-max — true greedy per request.

The processor runs first, before temperature and top-p. It reads each request's tokens in Python at
batch preparation and applies them when the logits arrive, so CB must run synchronously without CUDA
graphs (``model.server`` sets ``use_async_batching=False, use_cuda_graph=False``). Per-step cost: the
new tokens only (a running count per request), one gather/scatter on the logits of penalised rows.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
)

from model.penalty_check import (
    FIELDS,
    PENALTY_RANGE,
    REPETITION_RANGE,
    Penalties,
    pop_penalties,
)

__all__ = ["FIELDS", "PENALTY_RANGE", "REPETITION_RANGE", "Penalties", "PenaltyProcessor", "install", "pop_penalties"]


@dataclass
class _Seen:
    """What one request has seen: the prompt's distinct tokens, and output counts so far."""

    prompt: frozenset[int]
    counts: Counter = field(default_factory=Counter)
    counted: int = 0  # output tokens already in ``counts``


@dataclass
class _Plan:
    """Index tensors for one batch: which logits to change, and how."""

    rep_rows: list[int] = field(default_factory=list)
    rep_tokens: list[int] = field(default_factory=list)
    rep_factors: list[float] = field(default_factory=list)
    sub_rows: list[int] = field(default_factory=list)
    sub_tokens: list[int] = field(default_factory=list)
    sub_values: list[float] = field(default_factory=list)
    greedy_rows: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.rep_rows or self.sub_rows or self.greedy_rows)


def split_tokens(state: Any) -> tuple[list[int], list[int]]:
    """``(prompt, output)`` token ids of a CB ``RequestState``; a request re-queued after offloading
    carries its earlier output in ``initial_tokens`` past ``_true_initial_tokens`` (as
    ``RequestState.to_generation_output`` reads it)."""
    true_prompt = getattr(state, "_true_initial_tokens", 0)
    if true_prompt:
        return state.initial_tokens[:true_prompt], state.initial_tokens[true_prompt:] + state.generated_tokens
    return state.initial_tokens, state.generated_tokens


def apply_plan(scores: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """Apply a batch's penalties to ``scores`` ([rows, vocab] float logits) in place; returns it."""
    device = scores.device
    if plan.rep_rows:
        rows = torch.tensor(plan.rep_rows, dtype=torch.long, device=device)
        tokens = torch.tensor(plan.rep_tokens, dtype=torch.long, device=device)
        factors = torch.tensor(plan.rep_factors, dtype=scores.dtype, device=device)
        values = scores[rows, tokens]
        scores[rows, tokens] = torch.where(values > 0, values / factors, values * factors)
    if plan.sub_rows:
        rows = torch.tensor(plan.sub_rows, dtype=torch.long, device=device)
        tokens = torch.tensor(plan.sub_tokens, dtype=torch.long, device=device)
        scores[rows, tokens] -= torch.tensor(plan.sub_values, dtype=scores.dtype, device=device)
    if plan.greedy_rows:
        rows = torch.tensor(plan.greedy_rows, dtype=torch.long, device=device)
        best = scores[rows].argmax(dim=-1, keepdim=True)
        onehot = torch.full_like(scores[rows], -math.inf).scatter_(1, best, 0.0)
        scores[rows] = onehot
    return scores


class PenaltyProcessor(ContinuousBatchingLogitsProcessor):
    """The CB logits processor of the module docstring. Install it with :func:`install` before the CB
    manager starts. Kwargs per request: ``frequency_penalty``, ``presence_penalty``,
    ``repetition_penalty`` (float) and ``greedy`` (bool)."""

    supported_kwargs: ClassVar[dict[str, type]] = {
        "frequency_penalty": float, "presence_penalty": float, "repetition_penalty": float, "greedy": bool,
    }
    ignored_kwargs: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self._plan = _Plan()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list) -> torch.Tensor:
        """Record, for the rows of the coming logits (one per request with a new token, in order), the
        logits to change. Returns a placeholder row (the plan stays on the Python side)."""
        plan = _Plan()
        live: set[str] = set()
        for row, future in enumerate(requests_with_new_token):
            state = future.state
            kwargs = state.logit_processor_kwargs
            if kwargs.get("greedy"):
                plan.greedy_rows.append(row)
            frequency = kwargs.get("frequency_penalty", 0.0)
            presence = kwargs.get("presence_penalty", 0.0)
            repetition = kwargs.get("repetition_penalty", 1.0)
            if not (frequency or presence or repetition != 1.0):
                continue
            live.add(state.request_id)
            seen = self._update(state)
            if repetition != 1.0:
                for token in seen.prompt | seen.counts.keys():
                    plan.rep_rows.append(row)
                    plan.rep_tokens.append(token)
                    plan.rep_factors.append(repetition)
            if frequency or presence:
                for token, count in seen.counts.items():
                    plan.sub_rows.append(row)
                    plan.sub_tokens.append(token)
                    plan.sub_values.append(count * frequency + presence)
        self._forget_except(live)
        self._plan = plan
        return torch.zeros(len(requests_with_new_token), dtype=torch.int32)

    def _update(self, state: Any) -> _Seen:
        prompt, output = split_tokens(state)
        seen = self._seen.get(state.request_id)
        if seen is None or seen.counted > len(output):
            seen = self._seen[state.request_id] = _Seen(prompt=frozenset(prompt))
        seen.counts.update(output[seen.counted:])
        seen.counted = len(output)
        return seen

    def _forget_except(self, live: set[str]) -> None:
        """Drop counts of requests that are gone (bounded memory; a paused one is simply recounted)."""
        if len(self._seen) > 4 * len(live) + 64:
            for request_id in [r for r in self._seen if r not in live]:
                del self._seen[request_id]

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if self._plan.empty:
            return scores
        return apply_plan(scores, self._plan)


def install(logit_processor: Any) -> PenaltyProcessor:
    """Put a :class:`PenaltyProcessor` first in a CB manager's ``ContinuousBatchingLogitsProcessorList``
    (``manager.logit_processor``) — before ``manager.start()``, which sizes the per-request argument
    tensors from ``tensors_required``. Returns the processor."""
    processor = PenaltyProcessor()
    logit_processor.logits_processor.insert(0, processor)
    logit_processor.tensors_required += 1
    logit_processor._retrieve_processors_kwargs()
    logit_processor.do_processing = True
    return processor
