"""Checkpoints of ``campfire model finetune``: an interrupted run (Ctrl-C, a crash, a reboot) resumes
where it stopped when the same command is run again.

A checkpoint is one file, ``checkpoint.pt`` in the run's work folder, written to a temporary name and
renamed (atomic on POSIX: a second Ctrl-C while saving leaves the previous one whole). It holds the
LoRA weights, AdamW's state, the step, the loss history and the held-out loss before training, plus
the run's ``key`` — a hash of everything that makes two runs the same (base model, data fingerprint,
LoRA and optimiser hyper-parameters, max length, seed). A checkpoint with another key belongs to
another run and is never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatch(ValueError):
    """The work folder holds a checkpoint of a different run; ``str()`` says how to start over."""


@dataclass
class TrainState:
    """Where a run is: ``step`` (optimizer steps done), ``epoch`` and ``batch`` (the next batch of that
    epoch's order), ``history`` (``[step, loss]`` per logged step), ``tokens`` (answer tokens trained on),
    ``seconds`` (training time so far), ``held_out_before`` (loss before training, nats; None = not yet)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    history: list[list[float]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    held_out_before: float | None = None


def run_key(settings: dict[str, Any]) -> str:
    """SHA-256 (hex, 16 chars) of ``settings`` as sorted JSON: equal keys = the same run."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(work: Path, key: str, state: TrainState, model: Any, optimizer: Any, scheduler: Any) -> Path:
    """Write the checkpoint of ``model``'s trainable (LoRA) weights, the optimiser and scheduler state and
    ``state`` into ``work`` atomically; returns its path."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    payload = {"key": key, "state": state.__dict__, "lora": trainable, "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict()}
    target = work / CHECKPOINT
    tmp = target.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


def load(work: Path, key: str, model: Any, optimizer: Any, scheduler: Any) -> TrainState | None:
    """Restore the checkpoint in ``work`` into ``model`` (LoRA weights), ``optimizer`` and ``scheduler``;
    returns its :class:`TrainState`, or None when there is none.
    Raises :class:`CheckpointMismatch` when it belongs to another run (another ``key``)."""
    import torch

    path = work / CHECKPOINT
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        raise CheckpointMismatch(
            f"{path} holds a checkpoint of a different run (other data or settings); "
            "run again with --restart to discard it, or choose another --out"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in payload["lora"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return TrainState(**payload["state"])


def discard(work: Path) -> None:
    """Remove the checkpoint in ``work`` (``--restart``, or after the merged model is written)."""
    for name in (CHECKPOINT, CHECKPOINT.replace(".pt", ".tmp")):
        (work / name).unlink(missing_ok=True)
    try:
        work.rmdir()
    except OSError:
        pass
