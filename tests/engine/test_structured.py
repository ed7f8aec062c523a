"""Structured decoding: grammars compiled with llguidance, driven by random-logit "models"."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from jongleur.engine.errors import InvalidRequestError
from jongleur.engine.sampler import Sampler, SamplingState
from jongleur.engine.structured import GrammarCompiler, GrammarMatcher, GrammarStateError
from jongleur.engine.types import GuidedDecoding, SamplingParams

EOS = 0
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
        "score": {"type": ["number", "null"]},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A byte-level BPE: every byte is a token, so any text can be spelled."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ['{"name": "alice", "age": 31, "tags": ["a", "b"], "ok": true}', "[1, 2.5, false, null]"]
    tok.train_from_iterator(corpus * 50, trainer)
    assert tok.token_to_id("<eos>") == EOS
    return tok


@pytest.fixture(scope="module")
def compiler(tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, tokenizer.get_vocab_size(), [EOS])


def generate(tokenizer: Tokenizer, matcher: GrammarMatcher, seed: int, max_steps: int = 400) -> str:
    """A random-logit model under the grammar, through the real sampler, until termination."""
    vocab = tokenizer.get_vocab_size()
    sampler = Sampler(vocab)
    out: list[int] = []
    state = SamplingState.create(SamplingParams(seed=seed), [], out, (EOS,), grammar=matcher)
    g = torch.Generator().manual_seed(seed)
    for _ in range(max_steps):
        logits = torch.randn(1, vocab + 3, generator=g) * 2  # + padding columns
        tok = sampler(logits, [state]).token_ids[0]
        if tok == EOS:
            assert matcher.is_accepting()
            break
        matcher.accept_token(tok)
        out.append(tok)
        if matcher.is_terminated():
            break
    else:
        pytest.fail(f"no termination in {max_steps} steps: {tokenizer.decode(out)!r}")
    assert matcher.error is None
    return tokenizer.decode(out)


def check_person(value: object) -> None:
    """A hand-written check of PERSON (jsonschema is not installed)."""
    assert isinstance(value, dict)
    assert set(value) >= {"name", "age", "tags", "ok"} and set(value) <= set(PERSON["properties"])
    assert isinstance(value["name"], str) and len(value["name"]) <= 8
    assert type(value["age"]) is int and 0 <= value["age"] <= 150
    assert isinstance(value["tags"], list) and len(value["tags"]) <= 3
    assert all(t in ("a", "b", "c") for t in value["tags"])
    assert isinstance(value["ok"], bool)
    if "score" in value:
        assert value["score"] is None or (
            isinstance(value["score"], int | float) and value["score"] is not True
        )


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_validates(tokenizer: Tokenizer, compiler: GrammarCompiler, seed: int) -> None:
    compiled = compiler.compile(GuidedDecoding("json_schema", json.dumps(PERSON)))
    check_person(json.loads(generate(tokenizer, compiler.matcher(compiled), seed)))


@pytest.mark.parametrize("seed", range(4))
def test_json_object_output_is_an_object(tokenizer: Tokenizer, compiler: GrammarCompiler, seed: int) -> None:
    matcher = compiler.matcher(compiler.compile(GuidedDecoding("json_object")))
    assert isinstance(json.loads(generate(tokenizer, matcher, seed)), dict)


def test_recursive_schema_output_validates(tokenizer: Tokenizer, compiler: GrammarCompiler) -> None:
    tree = {
        "type": "object",
        "properties": {
            "v": {"type": "integer", "minimum": 0, "maximum": 9},
            "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},
        },
        "required": ["v"],
        "additionalProperties": False,
    }

    def check(node: object) -> None:
        assert isinstance(node, dict) and type(node["v"]) is int and 0 <= node["v"] <= 9
        for kid in node.get("kids", []):
            check(kid)

    compiled = compiler.compile(GuidedDecoding("json_schema", json.dumps(tree)))
    for seed in range(3):
        check(json.loads(generate(tokenizer, compiler.matcher(compiled), seed, max_steps=2000)))


def test_regex_and_lark(tokenizer: Tokenizer, compiler: GrammarCompiler) -> None:
    rx = r"[0-9]{3}-[a-z]{2,4}"  # not \d: the regex engine (Rust) takes \d as any Unicode digit
    for seed in range(4):
        text = generate(tokenizer, compiler.matcher(compiler.compile(GuidedDecoding("regex", rx))), seed)
        assert re.fullmatch(rx, text), text
    lark = 'start: answer " " num\nanswer: "yes" | "no"\nnum: /[1-9][0-9]?/'
    for seed in range(4):
        text = generate(tokenizer, compiler.matcher(compiler.compile(GuidedDecoding("lark", lark))), seed)
        assert re.fullmatch(r"(yes|no) [1-9][0-9]?", text), text


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("json_schema", "{not json"),
        ("json_schema", "[1, 2]"),
        ("json_schema", '{"type": "foo"}'),
        ("json_schema", '{"type": "object", "unevaluatedProperties": false}'),
        ("json_schema", '{"$ref": "#/$defs/missing"}'),
        ("json_schema", '{"type":"object","properties":{"a":' * 300 + '{"type":"integer"}' + "}}" * 300),
        ("regex", "(abc"),
        ("lark", "start: undefined_rule"),
    ],
)
def test_invalid_specs_are_400(compiler: GrammarCompiler, kind: str, spec: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        compiler.compile(GuidedDecoding(kind, spec))
    assert info.value.param == "response_format"


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        # $ref loops that match nothing
        ("json_schema", json.dumps({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})),
        (
            "json_schema",
            json.dumps(
                {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
            ),
        ),
        # catastrophic-backtracking patterns (llguidance's lexer does not backtrack)
        ("json_schema", json.dumps({"type": "string", "pattern": "(a+)+$"})),
        ("regex", "(a+)+$"),
        ("regex", "(a|aa)*b"),
        # exponential-size automata
        ("regex", "(a{1000}){1000}"),
        ("json_schema", json.dumps({"type": "string", "pattern": "^(a{500}){500}b$"})),
        # big enums: 10k compile, 20k exceed the lexer limits, 100k exceed the size limit
        ("json_schema", json.dumps({"enum": [f"value-{i}" for i in range(10_000)]})),
        ("json_schema", json.dumps({"enum": [f"v{i}" for i in range(20_000)]})),
        ("json_schema", json.dumps({"enum": list(range(100_000))})),
        ("json_schema", json.dumps({"anyOf": [{"const": i} for i in range(20_000)]})),
    ],
)
def test_hostile_specs_rejected_or_bounded(tokenizer: Tokenizer, kind: str, spec: str) -> None:
    compiler = GrammarCompiler(tokenizer, tokenizer.get_vocab_size(), [EOS])
    start = time.monotonic()
    try:
        matcher = compiler.matcher(compiler.compile(GuidedDecoding(kind, spec)))
    except InvalidRequestError as e:
        assert e.param == "response_format"
    else:  # usable, each step bounded too; a lexer limit hit while generating fails the sequence
        try:
            for _ in range(20):
                allowed = matcher.allowed_mask().nonzero().squeeze(1).tolist()
                if matcher.is_terminated() or not allowed:
                    break
                matcher.accept_token(allowed[-1])
        except GrammarStateError:
            assert matcher.error and matcher.is_terminated()
    assert time.monotonic() - start < 5.0


def test_cache_is_bounded_lru(tokenizer: Tokenizer) -> None:
    compiler = GrammarCompiler(tokenizer, tokenizer.get_vocab_size(), [EOS], cache_size=2)
    a = compiler.compile(GuidedDecoding("regex", "a+"))
    assert compiler.compile(GuidedDecoding("regex", "a+")) is a
    compiler.compile(GuidedDecoding("regex", "b+"))
    compiler.compile(GuidedDecoding("regex", "a+"))  # a is now the most recent
    compiler.compile(GuidedDecoding("regex", "c+"))  # evicts b
    assert compiler.cache_len() == 2
    assert compiler.compile(GuidedDecoding("regex", "a+")) is a


def test_matcher_mask_accept_rollback(tokenizer: Tokenizer, compiler: GrammarCompiler) -> None:
    matcher = compiler.matcher(compiler.compile(GuidedDecoding("regex", "ab")))
    vocab = tokenizer.get_vocab_size()
    a, b = tokenizer.token_to_id("a"), tokenizer.token_to_id("b")
    mask = matcher.allowed_mask()
    assert mask.shape == (vocab,) and mask[a] and not mask[b] and not mask[EOS]
    bits = torch.zeros((vocab + 31) // 32, dtype=torch.int32)
    matcher.fill_bitmask(bits)
    assert bool((bits[a // 32] >> (a % 32)) & 1)
    matcher.accept_token(a)
    assert matcher.allowed_mask()[b]
    matcher.rollback(1)
    assert matcher.allowed_mask()[a]
    matcher.accept_token(a)
    matcher.accept_token(b)
    assert matcher.is_accepting() and matcher.is_terminated() and matcher.allowed_mask()[EOS]
    # matchers from one compiled grammar are independent
    other = compiler.matcher(compiler.compile(GuidedDecoding("regex", "ab")))
    assert other.allowed_mask()[a] and not other.is_terminated()
    with pytest.raises(GrammarStateError):
        other.accept_token(b)


def test_grammar_rows_in_a_mixed_batch(tokenizer: Tokenizer, compiler: GrammarCompiler) -> None:
    vocab = tokenizer.get_vocab_size()
    compiled = compiler.compile(GuidedDecoding("regex", "[0-9]+"))
    digits = {tokenizer.token_to_id(str(d)) for d in range(10)}
    states = [
        SamplingState.create(
            SamplingParams(temperature=0.0 if i % 2 else 1.0),
            [],
            [],
            (EOS,),
            compiler.matcher(compiled) if i % 3 == 0 else None,
        )
        for i in range(9)
    ]
    torch.manual_seed(0)
    logits = torch.randn(9, vocab) * 3
    got = Sampler(vocab)(logits, states).token_ids
    for i, tok in enumerate(got):
        if i % 3 == 0:
            assert tok in digits
        elif i % 2:
            assert tok == int(logits[i].argmax())
