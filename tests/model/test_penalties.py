"""Repetition control per request (model/penalties.py) and the U+FFFD-free detokeniser (model/detok.py),
on transformers' real CB request objects and SmolLM2's real tokenizer. The end-to-end checks on the
real server are in test_server.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers.generation.continuous_batching.requests import (
    FutureRequestState,
    RequestState,
)

from model.detok import SafeDecodeStream
from model.penalties import Penalties, PenaltyProcessor, pop_penalties

VOCAB = 16


def future(request_id: str, prompt: list[int], output: list[int], **kwargs) -> FutureRequestState:
    state = RequestState(request_id=request_id, initial_tokens=prompt, logit_processor_kwargs=kwargs)
    state.generated_tokens = list(output)
    return FutureRequestState(state, has_new_token=True, complete_blocks=0, query_length=1)


def run(processor: PenaltyProcessor, futures: list[FutureRequestState], scores: torch.Tensor) -> torch.Tensor:
    arg = processor.prepare_tensor_args(futures)
    assert arg.shape == (len(futures),)
    return processor(scores.clone(), arg)


def test_pop_penalties_takes_the_fields_out_and_checks_them():
    body = {"model": "m", "frequency_penalty": 0.5, "presence_penalty": -1, "repetition_penalty": 1.2, "top_p": 1}
    assert pop_penalties(body) == Penalties(frequency=0.5, presence=-1.0, repetition=1.2)
    assert body == {"model": "m", "top_p": 1}  # upstream never sees them (it would map frequency onto a dropped processor)
    assert pop_penalties({}) == Penalties() and not Penalties().active
    assert Penalties(repetition=1.1).kwargs() == {"repetition_penalty": 1.1}
    for bad, words in [({"frequency_penalty": 2.5}, "[-2, 2]"), ({"presence_penalty": "high"}, "must be a number"),
                       ({"repetition_penalty": 0}, "(0, 5]"), ({"repetition_penalty": True}, "must be a number"),
                       ({"frequency_penalty": float("nan")}, "must be a number")]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")):
            pop_penalties(dict(bad))


def test_frequency_and_presence_penalise_the_output_of_their_own_row_only():
    scores = torch.linspace(-2, 2, VOCAB).repeat(3, 1)
    futures = [
        future("plain", prompt=[1, 2], output=[3, 3, 4]),
        future("freq", prompt=[5], output=[3, 3, 4], frequency_penalty=0.5, presence_penalty=0.25),
        future("pres", prompt=[6], output=[7], presence_penalty=1.0),
    ]
    out = run(PenaltyProcessor(), futures, scores)
    assert torch.equal(out[0], scores[0])  # a request without penalties is untouched
    assert out[1, 3] == pytest.approx(scores[1, 3] - (2 * 0.5 + 0.25))  # seen twice
    assert out[1, 4] == pytest.approx(scores[1, 4] - (0.5 + 0.25))
    assert out[1, 5] == scores[1, 5]  # prompt tokens do not count for OpenAI's penalties
    assert out[2, 7] == pytest.approx(scores[2, 7] - 1.0)
    changed = (out != scores).nonzero().tolist()
    assert changed == [[1, 3], [1, 4], [2, 7]]


def test_repetition_penalty_covers_prompt_and_output_and_shrinks_towards_zero():
    scores = torch.tensor([[2.0, -2.0, 2.0, -2.0, 1.0]])
    out = run(PenaltyProcessor(), [future("r", prompt=[0, 1], output=[2], repetition_penalty=2.0)], scores)
    assert out.tolist() == [[1.0, -4.0, 1.0, -2.0, 1.0]]  # positive ÷ r, negative × r; token 3 unseen


def test_counts_follow_the_output_as_it_grows_and_forget_finished_requests():
    processor = PenaltyProcessor()
    scores = torch.zeros(1, VOCAB)
    req = future("grow", prompt=[1], output=[2], frequency_penalty=1.0)
    assert run(processor, [req], scores)[0, 2] == -1.0
    req.state.generated_tokens += [2, 2]  # two more steps
    assert run(processor, [req], scores)[0, 2] == -3.0
    for i in range(100):  # many other requests come and go: the finished one's counts are dropped
        run(processor, [future(f"other{i}", [1], [1], frequency_penalty=0.1)], scores)
    assert len(processor._seen) < 70 and "grow" not in processor._seen


def test_offloaded_request_counts_its_earlier_output():
    """CB re-queues an offloaded request with its output folded into ``initial_tokens``."""
    state = RequestState(request_id="o", initial_tokens=[1, 9, 9], logit_processor_kwargs={"frequency_penalty": 1.0})
    state._true_initial_tokens = 1
    state.generated_tokens = [9]
    out = run(PenaltyProcessor(), [FutureRequestState(state, True, 0, 1)], torch.zeros(1, VOCAB))
    assert out[0, 9] == -3.0 and out[0, 1] == 0.0


def test_greedy_rows_keep_only_the_best_token_after_the_penalties():
    scores = torch.tensor([[0.0, 3.0, 2.9, 1.0], [0.0, 3.0, 2.9, 1.0]])
    futures = [future("g", [0], [1], greedy=True, frequency_penalty=0.5), future("s", [0], [])]
    out = run(PenaltyProcessor(), futures, scores)
    assert out[0].tolist() == [-math.inf, -math.inf, 0.0, -math.inf]  # token 1 penalised below token 2
    assert torch.equal(out[1], scores[1])


@pytest.fixture(scope="module")
def tokenizer(prepared_model: Path) -> Tokenizer:
    return Tokenizer.from_file(str(prepared_model / "tokenizer.json"))


def stream(tokenizer: Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    safe = SafeDecodeStream(skip_special_tokens=True)
    parts = [t for i in ids if (t := safe.step(tokenizer, i)) is not None]
    return parts, safe.flush(tokenizer)


def test_chinese_split_across_byte_tokens_streams_whole(tokenizer):
    text = "月亮和猫在屋顶上看星星。茧里的小蝴蝶醒了！"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text)  # SmolLM2 spells these characters in byte pieces
    parts, tail = stream(tokenizer, ids)
    assert "".join(parts) + tail == text
    assert all("\ufffd" not in p for p in parts)


def test_an_unfinished_character_is_dropped_not_emitted_as_replacement(tokenizer):
    moon = tokenizer.encode("月", add_special_tokens=False).ids
    cat = tokenizer.encode("猫a", add_special_tokens=False).ids
    ids = moon[:1] + tokenizer.encode(" a", add_special_tokens=False).ids + cat + moon[:1]
    upstream = DecodeStream([], skip_special_tokens=True)
    shown = "".join(t for i in ids if (t := upstream.step(tokenizer, i)) is not None)
    assert "\ufffd" in shown  # what transformers' streamer sent (issue 14)
    parts, tail = stream(tokenizer, ids)
    assert "".join(parts) + tail == " a猫a"  # the valid text, whole; the broken bytes gone
    assert tail == ""  # the trailing lone byte is not flushed as U+FFFD either


async def test_the_server_streamer_sends_no_replacement_character_and_flushes_the_tail(tokenizer):
    """The streamer campfire serve uses (model.server_cb) on a CB output with a broken character, and
    one that ends with a whole character still held back behind a lone byte."""
    import asyncio

    from transformers.generation.continuous_batching.requests import (
        GenerationOutput,
        RequestStatus,
    )

    from model.server_cb import _streamer_class

    moon = tokenizer.encode("月", add_special_tokens=False).ids
    ok = tokenizer.encode("好", add_special_tokens=False).ids
    space_and_lead_byte = tokenizer.token_to_id("Ġæ")  # " " + the first byte of a 3-byte character, one token
    ids = moon[:1] + tokenizer.encode(" a猫", add_special_tokens=False).ids + ok + [space_and_lead_byte]
    queue: asyncio.Queue = asyncio.Queue()
    streamer = _streamer_class()(None, "r1", tokenizer, asyncio.get_running_loop(), queue)
    streamer.put(GenerationOutput("r1", generated_tokens=ids[:3]))
    streamer.put(GenerationOutput("r1", generated_tokens=ids, status=RequestStatus.FINISHED))
    streamer.end()
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
    assert "".join(items) == " a猫好 "  # the space held back with the lone byte comes out at the end
    assert all("\ufffd" not in i for i in items)
