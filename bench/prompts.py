"""Deterministic, varied prompts of a chosen token length for the serving benchmark.

Prompts are drawn from a fixed corpus with a seeded shuffle, each opening with a distinct header, so
no two requests share more than the chat template's own prefix (a prefix cache cannot trivialise the
run) and two runs with the same seed send the same text to every system.

Token counts depend on the server's tokenizer, so `calibrate` asks the server itself: two probe
requests (max_tokens=1) report `usage.prompt_tokens`, and a linear fit maps words to tokens,
chat-template overhead included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CORPUS = """
The river town woke before the sun, and the bakers were the first to light their ovens.
A merchant from the coast arrived with salt, dried fish and news of a storm that had sunk two ships.
Children ran along the quay counting the boats and arguing about which one was the fastest.
The old bridge had been rebuilt three times, each time a little wider and a little lower.
In the library, a clerk copied tax records by candlelight and complained about the price of ink.
Engineers argued that a canal would double the trade, while farmers feared it would flood their fields.
The council met every Tuesday in a hall that smelled of wax, wet wool and pipe smoke.
A travelling doctor set up a table in the square and sold remedies that cured nothing at all.
Winter came early that year; the river froze and the mills stood silent for six weeks.
When the thaw arrived, the ice broke with a sound like cannon fire and the whole town came to watch.
A young woman opened a school for the ferrymen's children and taught them arithmetic with pebbles.
The printer's apprentice set the type for the first newspaper upside down, and nobody noticed until noon.
Caching works because programs tend to reuse the data they touched most recently.
A scheduler decides which task runs next; a fair one makes sure that no task waits forever.
Memory bandwidth, not arithmetic, limits how fast a small model can produce one token at a time.
Batching many requests together turns matrix-vector products into matrix-matrix products.
The compiler unrolled the loop, vectorised the body and hoisted the bounds check out of it.
A hash table trades memory for speed; a sorted array trades speed for memory and predictability.
Distributed systems fail in partial, confusing ways, which is why timeouts and retries matter so much.
Every benchmark measures something; the hard part is knowing exactly what it measured.
The gardener planted tomatoes, beans and marigolds, because the marigolds kept the insects away.
A fox crossed the frozen field at dawn, leaving a straight line of prints toward the forest.
The orchestra tuned for a long minute while the audience coughed, whispered and settled down.
She wrote the proof on the back of an envelope, then spent a week checking a single inequality.
The recipe called for flour, butter, two eggs, a pinch of salt and far more patience than expected.
Lighthouse keepers once kept logs of every ship they saw, the weather and the state of the lamp.
A good map leaves things out; a perfect map would be as large and as useless as the territory.
The museum's newest exhibit was a clock that had run without stopping for three hundred years.
Trains in the valley ran on time except on market days, when cattle wandered across the tracks.
Translation is never exact: every language divides the world into slightly different pieces.
The committee approved the budget after a debate that lasted longer than the project itself.
A spider rebuilt its web every evening in the same corner of the same window, facing the lamp.
Mountaineers start before dawn so they can descend before the afternoon storms arrive.
The archive held letters from sailors, merchants and one very persistent collector of beetles.
Rust on the old gate told how many winters had passed since anyone last opened it.
In the market, the fishmonger weighed each catch twice and rounded down in the customer's favour.
The violinist practised scales for an hour every morning, even on the day of the concert.
Wind turbines on the ridge turned slowly, and the sheep below ignored them completely.
A well-written error message tells you what went wrong, where, and what you can do about it.
The telescope revealed that the faint smudge was not one star but a pair orbiting each other.
""".strip().splitlines()

WORDS_PER_SENTENCE = sum(len(s.split()) for s in CORPUS) / len(CORPUS)


def text_of_words(n_words: int, seed: int, header: str = "") -> str:
    """About `n_words` words of corpus text, sentences in a seeded order, opening with `header`."""
    rng = random.Random(seed)
    words: list[str] = header.split() if header else []
    while len(words) < n_words:
        order = CORPUS[:]
        rng.shuffle(order)
        for sentence in order:
            words.extend(sentence.split())
            if len(words) >= n_words:
                break
    return " ".join(words[: max(n_words, 1)])


@dataclass(frozen=True)
class TokenFit:
    """prompt_tokens ~= overhead + per_word * words, as measured on a server."""

    overhead: float
    per_word: float

    def words_for(self, tokens: int) -> int:
        return max(1, round((tokens - self.overhead) / self.per_word))


DEFAULT_FIT = TokenFit(overhead=30.0, per_word=1.3)


def chat_prompt(index: int, n_words: int, seed: int = 0) -> list[dict[str, str]]:
    """Messages for request `index`: distinct from the first user token on."""
    header = f"Note {index + 1} (series {seed}). Summarise the following text in detail:"
    return [{"role": "user", "content": text_of_words(n_words, seed * 100_003 + index, header)}]


def shared_prefix_prompt(
    index: int, prefix_words: int, question_words: int, prefix_seed: int
) -> list[dict[str, str]]:
    """A long system prompt chosen by `prefix_seed` (same seed = same prefix) and a short distinct question."""
    system = text_of_words(prefix_words, 7_000_000 + prefix_seed, f"Context document {prefix_seed}:")
    question = text_of_words(question_words, 9_000_000 + index, f"Question {index + 1}: explain")
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]
