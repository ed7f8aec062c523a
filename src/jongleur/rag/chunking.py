"""Structure-aware chunking: blocks -> `ChunkDraft`s of at most `max_tokens` embedding tokens.

Rules: a heading starts a new chunk and becomes part of the heading path of every chunk under it;
paragraphs are packed together until the budget is reached; a code block stays whole when it fits
(else it is split on lines); an over-long paragraph is split on sentences, then on words. A new
chunk inside the same section begins with the tail of the previous one (`overlap_tokens`), so a
fact that straddles a boundary is still found. Tokens are counted with the embedding model's
tokenizer (`count` takes a list of texts, so counting is batched).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from jongleur.rag.parsing import Block

TokenCounter = Callable[[list[str]], list[int]]


@dataclass
class ChunkDraft:
    text: str
    heading_path: list[str]
    page: int | None
    start: int
    end: int
    tokens: int

    @property
    def embed_text(self) -> str:
        """What is embedded: the section path gives the passage its context."""
        if self.heading_path:
            return " > ".join(self.heading_path) + "\n" + self.text
        return self.text


@dataclass
class _Piece:
    text: str
    page: int | None
    start: int
    end: int
    tokens: int
    code: bool = False


def _split_long(block: Block, count: TokenCounter, max_tokens: int) -> list[_Piece]:
    """Split a block that does not fit: code on lines, prose on sentences, then on words."""
    pattern = r"(?<=\n)" if block.kind == "code" else r"(?<=[.!?;:])\s+|\n+"
    units: list[tuple[str, int]] = []  # (text, offset in block)
    pos = 0
    for part in re.split(pattern, block.text):
        if not part:
            continue
        idx = block.text.find(part, pos)
        units.append((part, idx))
        pos = idx + len(part)
    sizes = count([u for u, _ in units])
    fine: list[tuple[str, int, int]] = []
    for (text, off), n in zip(units, sizes, strict=True):
        if n <= max_tokens:
            fine.append((text, off, n))
            continue
        words = text.split(" ")
        step = max(1, int(len(words) * max_tokens / n * 0.9))
        wpos = off
        for i in range(0, len(words), step):
            piece = " ".join(words[i:i + step])
            fine.append((piece, wpos, count([piece])[0]))
            wpos += len(piece) + 1
    pieces: list[_Piece] = []
    cur: list[tuple[str, int, int]] = []
    cur_tokens = 0
    sep = "" if block.kind == "code" else " "

    def emit() -> None:
        if cur:
            start = block.start + cur[0][1]
            end = block.start + cur[-1][1] + len(cur[-1][0])
            pieces.append(_Piece(sep.join(t for t, _, _ in cur), block.page, start, min(end, block.end),
                                 cur_tokens, block.kind == "code"))

    for text, off, n in fine:
        if cur and cur_tokens + n > max_tokens:
            emit()
            cur, cur_tokens = [], 0
        cur.append((text, off, n))
        cur_tokens += n
    emit()
    return pieces


def chunk_blocks(blocks: list[Block], count: TokenCounter, max_tokens: int = 200,
                 overlap_tokens: int = 32) -> list[ChunkDraft]:
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    sizes = count([b.text for b in blocks]) if blocks else []
    chunks: list[ChunkDraft] = []
    path: list[tuple[int, str]] = []
    cur: list[_Piece] = []
    cur_tokens = 0

    def heading_path() -> list[str]:
        return [t for _, t in path]

    def emit(carry: bool) -> None:
        nonlocal cur, cur_tokens
        if not cur:
            return
        text = "\n\n".join(p.text for p in cur)
        chunks.append(ChunkDraft(text, heading_path(), cur[0].page, cur[0].start, cur[-1].end, cur_tokens))
        tail: list[_Piece] = []
        if carry and overlap_tokens > 0 and not cur[-1].code:
            last = cur[-1]
            sentences = re.split(r"(?<=[.!?])\s+", last.text)
            kept: list[str] = []
            total = 0
            for s in reversed(sentences):
                n = count([s])[0]
                if total + n > overlap_tokens:
                    break
                kept.insert(0, s)
                total += n
            if kept and len(kept) < len(sentences):
                text = " ".join(kept)
                tail = [_Piece(text, last.page, max(last.start, last.end - len(text)), last.end, total)]
        cur = tail
        cur_tokens = sum(p.tokens for p in tail)

    for block, n in zip(blocks, sizes, strict=True):
        if block.kind == "heading":
            emit(carry=False)
            cur, cur_tokens = [], 0
            level = block.level or 1
            path = [(lv, t) for lv, t in path if lv < level] + [(level, block.text[:200])]
            continue
        # split pieces leave room for the overlap carried from the previous chunk
        pieces = ([_Piece(block.text, block.page, block.start, block.end, n, block.kind == "code")]
                  if n <= max_tokens else _split_long(block, count, max(8, max_tokens - overlap_tokens)))
        for piece in pieces:
            if cur and (cur_tokens + piece.tokens > max_tokens or piece.page != cur[-1].page):
                emit(carry=piece.page == cur[-1].page)
                if cur_tokens + piece.tokens > max_tokens:
                    cur, cur_tokens = [], 0
            cur.append(piece)
            cur_tokens += piece.tokens
    emit(carry=False)
    return chunks
