"""IncrementalDetokenizer: whole characters only, stop strings across token boundaries, bounded cost."""

from __future__ import annotations

import time

import pytest

from jongleur.tokenizer import Tokenizer
from jongleur.tokenizer.detokenizer import IncrementalDetokenizer
from jongleur.tokenizer.gguf_vocab import bytes_to_unicode
from jongleur.tokenizer.stop_strings import StopAutomaton, StopScanner

TEXTS = [
    "Bonjour, ça va ? Très bien.",
    "Emoji 🎉🚀👩‍👩‍👧 and CJK 你好世界, done.",
    "def add(a, b):\n    return a + b\n\n\n   spaces",
    "mixed <|im_start|> typed by a user",
]


def stream(tok: Tokenizer, ids: list[int], **kwargs: object) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tok, **kwargs)  # type: ignore[arg-type]
    deltas = []
    for token_id in ids:
        delta = detok.add([token_id])
        deltas.append(delta.text)
        if delta.finished:
            return deltas, detok
    deltas.append(detok.finish().text)
    return deltas, detok


@pytest.mark.parametrize("text", TEXTS)
def test_stream_reconstructs_text_without_broken_characters(tiny_tokenizer: Tokenizer, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    deltas, detok = stream(tiny_tokenizer, ids)
    assert "".join(deltas) == text == detok.text
    for delta in deltas:
        assert "\ufffd" not in delta
        delta.encode("utf-8")  # no lone surrogates


def test_emoji_split_across_byte_tokens_comes_out_whole(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("🚀")
    assert len(ids) == 4  # not in the tiny vocabulary: one token per byte
    deltas, _ = stream(tiny_tokenizer, ids)
    assert deltas == ["", "", "", "🚀", ""]


def test_prompt_context_and_special_tokens(tiny_tokenizer: Tokenizer) -> None:
    prompt = tiny_tokenizer.encode_prompt("<|im_start|>assistant\n")
    out = tiny_tokenizer.encode_prompt(" hello<|im_end|>")
    deltas, _ = stream(tiny_tokenizer, out, prompt_ids=prompt)
    assert "".join(deltas) == " hello"
    deltas, _ = stream(tiny_tokenizer, out, prompt_ids=prompt, skip_special_tokens=False)
    assert "".join(deltas) == " hello<|im_end|>"


def test_invalid_bytes_do_not_stall_forever(tiny_tokenizer: Tokenizer) -> None:
    # byte 0x80 alone is never valid UTF-8
    continuation = tiny_tokenizer.token_to_id(bytes_to_unicode()[0x80])
    assert continuation is not None
    detok = IncrementalDetokenizer(tiny_tokenizer)
    released = "".join(detok.add([continuation]).text for _ in range(20))
    assert released and set(released) == {"\ufffd"}


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_across_every_token_split(tiny_tokenizer: Tokenizer, include: bool) -> None:
    text = "The answer is 42. STOP here and more"
    ids = tiny_tokenizer.encode(text)
    for chunk in (1, 2, 3, len(ids)):
        detok = IncrementalDetokenizer(tiny_tokenizer, stop=["STOP"], include_stop_str_in_output=include)
        out = ""
        for i in range(0, len(ids), chunk):
            delta = detok.add(ids[i:i + chunk])
            out += delta.text
            assert "STO" not in out or include
            if delta.finished:
                break
        assert delta.finished and delta.stop == "STOP"
        assert out == ("The answer is 42. STOP" if include else "The answer is 42. ")


def test_partial_stop_prefix_is_held_then_released(tiny_tokenizer: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny_tokenizer, stop=["STOP"])
    out = ""
    for token_id in tiny_tokenizer.encode("go ST"):
        out += detok.add([token_id]).text
    assert out == "go "  # "ST" might begin "STOP"
    out += detok.add(tiny_tokenizer.encode("ART")).text
    assert out == "go START"
    final = detok.finish()
    assert final.finished and final.stop is None and detok.text == "go START"


def test_earliest_stop_wins_and_overlapping_stops(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("xx abcd yy")
    _, detok = stream(tiny_tokenizer, ids, stop=["abcd", "bc", "zz"])
    assert detok.stop_reason == "bc" and detok.text == "xx a"
    _, detok = stream(tiny_tokenizer, ids, stop=["cd y", "abcd"])
    assert detok.stop_reason == "abcd" and detok.text == "xx "


def test_stop_automaton_matches_naive_search() -> None:
    import random

    rng = random.Random(0)
    for _ in range(300):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 4))]
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        match = StopScanner(StopAutomaton(stops)).feed(text)
        ends = [(text.find(s) + len(s), -len(s), s) for s in stops if s in text]
        if not ends:
            assert match is None
        else:
            end, neg_len, _ = min(ends)
            assert match is not None and (match.end, match.start) == (end, end + neg_len)


def test_thousands_of_long_stop_strings_stay_cheap(tiny_tokenizer: Tokenizer) -> None:
    stops = [f"never-{i}-" + "x" * 10 for i in range(3000)]
    automaton = StopAutomaton(stops)  # built once per request, shared by its sequences
    ids = tiny_tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 40)
    start = time.perf_counter()
    deltas, detok = stream(tiny_tokenizer, ids, stop=automaton)
    assert time.perf_counter() - start < 2.0
    assert "".join(deltas) == detok.text and not detok.stop_reason


def test_oversized_stop_lists_are_rejected() -> None:
    from jongleur.engine.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as info:
        StopAutomaton([f"s{i}" for i in range(5000)])
    assert info.value.param == "stop"
    with pytest.raises(InvalidRequestError):
        StopAutomaton(["x" * 100_000])
