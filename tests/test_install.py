"""The installed versions Campfire depends on beyond their public APIs.

``model/server.py`` (``campfire serve``) is built from transformers' serving internals
(``transformers.cli.serving.*``: ``ModelManager``, ``GenerationState``, ``CBGenerateManager``, the
handlers, ``build_server``), which transformers does not promise to keep. These tests fail with one
clear message naming the range Campfire was written for when an upgrade moved them, instead of
``campfire serve`` breaking at start-up on a fresh install. Known to work (the whole suite, locked in
requirements/cpu.txt): transformers 5.24.0. Older releases differ: 5.23.0 has these names and
parameters but its ``GET /v1/models`` answers 500 with ``force_model`` (tests/model/test_server.py);
5.20-5.22 lack ``ModelManager(continuous_batching=)``; 5.19 and older lack ``cli/serving/systemone.py``.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata

import pytest

WRITTEN_FOR = "transformers>=5.24,<6 (known to work: 5.24.0, the version in requirements/cpu.txt)"

# module -> names model/server.py imports from it
SERVING_NAMES = {
    "transformers": ["ContinuousBatchingConfig"],
    "transformers.cli.serving.chat_completion": ["ChatCompletionHandler"],
    "transformers.cli.serving.completion": ["CompletionHandler"],
    "transformers.cli.serving.model_manager": ["ModelManager"],
    "transformers.cli.serving.response": ["ResponseHandler"],
    "transformers.cli.serving.server": ["build_server"],
    "transformers.cli.serving.systemone": ["SystemOneHandler"],
    "transformers.cli.serving.transcription": ["TranscriptionHandler"],
    "transformers.cli.serving.utils": ["CBGenerateManager", "GenerationState", "CBStreamer", "response_events_to_chunks",
                                       "_StreamError"],
    # model/penalties.py: per-request frequency / presence / repetition penalties under continuous batching
    "transformers.generation.continuous_batching.cb_logits_processors": ["ContinuousBatchingLogitsProcessor"],
}

# (module, attribute path, parameters model/server.py passes or overrides)
SERVING_PARAMETERS = [
    ("transformers", "ContinuousBatchingConfig", ["max_memory_percent", "max_batch_tokens", "max_requests_per_batch", "per_request_processors",
                                                  "use_async_batching", "use_cuda_graph"]),
    ("transformers.cli.serving.model_manager", "ModelManager", ["device", "dtype", "continuous_batching", "force_model"]),
    ("transformers.cli.serving.utils", "GenerationState", ["continuous_batching", "cb_config"]),
    ("transformers.cli.serving.utils", "GenerationState.get_manager", ["model_id", "use_cb"]),
    ("transformers.cli.serving.utils", "CBGenerateManager", ["cb_config"]),
    ("transformers.cli.serving.utils", "CBGenerateManager.init_cb", ["model", "gen_config"]),
    ("transformers.cli.serving.utils", "CBGenerateManager.generate_streaming", ["model", "processor", "inputs", "gen_config", "request_id", "response_parser"]),
    ("transformers.cli.serving.utils", "CBGenerateManager.generate_non_streaming", ["model", "processor", "inputs", "gen_config", "request_id"]),
    ("transformers.cli.serving.chat_completion", "ChatCompletionHandler", ["model_manager", "generation_state"]),
    ("transformers.cli.serving.chat_completion", "ChatCompletionHandler.handle_request", []),
    ("transformers.cli.serving.completion", "CompletionHandler", ["model_manager", "generation_state"]),
    ("transformers.cli.serving.response", "ResponseHandler", ["model_manager", "generation_state"]),
    ("transformers.cli.serving.systemone", "SystemOneHandler", ["model_manager", "generation_state"]),
    ("transformers.cli.serving.server", "build_server", ["completion_handler", "response_handler", "transcription_handler", "systemone_handler", "generation_state"]),
]


def _moved(what: str) -> str:
    return (
        f"transformers {metadata.version('transformers')} is installed, and {what}. model/server.py "
        f"(`campfire serve`) builds on transformers' serving internals and was written for {WRITTEN_FOR}. "
        "Install the locked versions (`make install`, requirements/*.txt) or port model/server.py to this "
        "transformers and widen the range in pyproject.toml."
    )


def _resolve(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("module", sorted(SERVING_NAMES))
def test_transformers_serving_internals_import(module: str):
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        error = f"`import {module}` fails ({e})"
    else:
        error = None
    if error:
        pytest.fail(_moved(error), pytrace=False)
    missing = [name for name in SERVING_NAMES[module] if not hasattr(mod, name)]
    if missing:
        pytest.fail(_moved(f"{module} has no {', '.join(missing)}"), pytrace=False)


@pytest.mark.parametrize(("module", "path", "params"), SERVING_PARAMETERS, ids=[p for _, p, _ in SERVING_PARAMETERS])
def test_transformers_serving_internals_signatures(module: str, path: str, params: list[str]):
    try:
        obj = _resolve(module, path)
    except (ImportError, AttributeError) as e:
        error = f"{module}.{path} is gone ({e})"
    else:
        error = None
    if error:
        pytest.fail(_moved(error), pytrace=False)
    accepted = inspect.signature(obj).parameters
    missing = [p for p in params if p not in accepted]
    if missing:
        pytest.fail(_moved(f"{module}.{path} no longer takes {', '.join(missing)}"), pytrace=False)


def test_transformers_serving_state_attributes():
    """``_State.get_manager`` in model/server.py sets these private attributes before deferring to super()."""
    from transformers import ContinuousBatchingConfig
    from transformers.cli.serving.utils import CBGenerateManager, GenerationState

    state = GenerationState(continuous_batching=True, cb_config=ContinuousBatchingConfig(per_request_processors=True))
    missing = [a for a in ("_cb_manager", "_cb_config", "_cb_model_id") if not hasattr(state, a)]
    if missing:
        pytest.fail(_moved(f"GenerationState no longer keeps {', '.join(missing)}"), pytrace=False)
    if not hasattr(CBGenerateManager(cb_config=None), "_cb"):
        pytest.fail(_moved("CBGenerateManager no longer keeps its continuous-batching manager in `_cb`"), pytrace=False)


def test_continuous_batching_logits_processor_hooks():
    """``model/penalties.py`` registers its processor through these members of the continuous-batching
    processor list (``logits_processor``, ``tensors_required``, ``_retrieve_processors_kwargs``,
    ``do_processing``) and
    reads ``RequestState.logit_processor_kwargs`` / ``_true_initial_tokens``."""
    from transformers.generation.continuous_batching import requests
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessorList,
    )

    src = inspect.getsource(ContinuousBatchingLogitsProcessorList)
    missing = [a for a in ("tensors_required", "def _retrieve_processors_kwargs", "logits_processor", "do_processing")
               if a not in src]
    if missing:
        pytest.fail(_moved(f"ContinuousBatchingLogitsProcessorList no longer has {', '.join(missing)}"), pytrace=False)
    state_src = inspect.getsource(requests)
    missing = [a for a in ("logit_processor_kwargs", "_true_initial_tokens") if a not in state_src]
    if missing:
        pytest.fail(_moved(f"continuous batching's RequestState no longer has {', '.join(missing)}"), pytrace=False)
