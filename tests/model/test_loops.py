"""``model.loops``: loops found while text streams (the outputs the issue quoted from the default
model), the stream stopped as soon as they start, the text cut back before the loop and to a full
sentence — and ordinary prose (human-written tales, English and Chinese) left alone."""

from __future__ import annotations

import json

import pytest

from model.loops import LoopGuard, ends_on_sentence, find_loop, trim_loop, trim_to_sentence
from tests.conftest import shared_data

# shapes of the default model's loops quoted in issue 14
SUFFER = ("The old house stood at the end of the lane. Its owner walked the hall each night. "
          + "Suffer, but often used, as a constant reminder. " * 8)
LIKES = "Posted by the lighthouse keeper.\n" + "Likes: 1\n" * 30
SEMICOLONS = "他推开门，看见一只猫。" + "；" * 250
COCOON = "她在树下等了很久，直到太阳落山。然后将累" + "疯" * 40
SILK = "春天来了。小蚕吐丝结" + "茧" * 40
ZH_PHRASE = "小明每天早上去学校。" + "他走过那座古老的石桥，" * 6


def stream(guard: LoopGuard, text: str, step: int = 3) -> int | None:
    """Feed ``text`` in ``step``-character deltas; the offset of the delta that stopped it, or None."""
    for i in range(0, len(text), step):
        if guard.feed(text[i : i + step]):
            return i
    return None


@pytest.mark.parametrize("text, kind", [(SUFFER, "ngram"), (LIKES, "line"), (SEMICOLONS, "run"), (COCOON, "run"),
                                        (SILK, "run"), (ZH_PHRASE, "ngram")])
def test_the_models_loops_are_stopped_early_and_cut_away(text, kind):
    guard = LoopGuard()
    stopped_at = stream(guard, text)
    assert stopped_at is not None and guard.loop is not None and guard.loop.kind == kind
    assert stopped_at < len(text) * 0.6  # the stream was closed long before it ended
    kept = guard.trimmed()
    assert find_loop(kept) is None  # nothing of the loop is left …
    assert kept and ends_on_sentence(kept)  # … and it ends on a full sentence
    assert text.startswith(kept)


def test_the_first_occurrence_is_kept_and_the_repeats_are_cut():
    kept = trim_loop(SUFFER)
    assert kept.endswith("Suffer, but often used, as a constant reminder.")
    assert kept.count("constant reminder") == 1
    assert trim_loop(LIKES) == "Posted by the lighthouse keeper."


def test_streamed_and_whole_text_agree():
    for text in (SUFFER, LIKES, SEMICOLONS, ZH_PHRASE):
        one, many = LoopGuard(), LoopGuard()
        one.feed(text)
        stream(many, text, step=1)
        assert one.finish() is not None and many.finish() is not None
        assert one.trimmed() == many.trimmed()


def test_a_word_still_growing_at_the_end_of_a_delta_is_not_a_unit_yet():
    guard = LoopGuard(ngram=2, repeats=2)
    assert not guard.feed("red ca")
    assert not guard.feed("t red car")  # "red cat" then "red car": no 2-gram seen twice
    assert guard.feed(" red cat ")  # "red cat" again
    assert guard.loop.unit == "red cat"


def test_ordinary_repetition_is_not_a_loop():
    assert find_loop("哈哈哈，他笑了。嗯嗯，好的。") is None  # laughter, reduplication
    assert find_loop("Nooooo! she cried… It was fine... Really?!") is None
    assert find_loop("* * *\nThe first night.\n* * *\nThe second night.\n* * *\nThe last night.") is None
    diary = "\n\n".join(f"Dear Diary,\n\nDay {n}: {line}" for n, line in enumerate(
        ["It rained and the cat slept.", "We went to the sea.", "I found a shell.", "Home again."], 1))
    assert find_loop(diary) is None  # a heading every few lines is not a loop


def test_human_written_tales_rarely_trip_the_guard():
    """The first 1,500 characters (a short story's length) of 219 real tales: the guard stays quiet on
    nearly all (the few it stops are deliberate repetition: ████ redactions, "yesssss", refrains)."""
    path = shared_data("stories", "scp_tales.jsonl")
    texts = [json.loads(line)["text"][:1500] for line in path.read_text(encoding="utf-8").splitlines()]
    flagged = [t for t in texts if find_loop(t) is not None]
    assert len(texts) > 200 and len(flagged) / len(texts) < 0.08, len(flagged)


def test_trim_to_sentence_handles_english_and_chinese_ends():
    assert trim_to_sentence("She smiled. Then she") == "She smiled."
    assert trim_to_sentence("“Come back,” he said. “Please!” And") == "“Come back,” he said. “Please!”"
    assert trim_to_sentence("他笑了。她说：“再见！”然后") == "他笑了。她说：“再见！”"
    assert trim_to_sentence("no end here") == "no end here"
    assert ends_on_sentence("他笑了。") and ends_on_sentence("Done!) ") and not ends_on_sentence("Done,")


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        LoopGuard(ngram=1)
