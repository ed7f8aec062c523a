"""Text in a PDF that a reader cannot see, dropped before it is indexed.

A PDF can carry text that never shows on the page and still lands in a text layer (and so in a
model's prompt): invisible render modes (`3 Tr`, `7 Tr`), white fill, glyphs under 1 pt, or text
placed outside the page box. `HiddenTextFilter` follows the graphics state while pypdf walks a
page's content stream (its `visitor_operand_before` hook, which sees every operator with the
current CTM and text matrix) and empties the operands of each text-showing operator drawn hidden,
so pypdf's own layout of the visible text is kept. What it dropped is counted by reason.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pypdf.generic import TextStringObject

INVISIBLE_RENDER_MODES = {3, 7}  # 3: neither fill nor stroke; 7: add to clipping path only
MIN_FONT_POINTS = 1.0
PAGE_MARGIN = 2.0  # points of tolerance around the page box
_SHOW_TEXT = {b"Tj": 0, b"'": 0, b'"': 2, b"TJ": 0}  # operator -> index of its text operand


@dataclass(frozen=True)
class _State:
    render_mode: int = 0
    white_fill: bool = False
    font_size: float = 0.0


def _multiply(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """PDF 3x3 affine matrices as [a b c d e f] (row vectors): a x b."""
    return [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
            a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3],
            a[4] * b[0] + a[5] * b[2] + b[4], a[4] * b[1] + a[5] * b[3] + b[5]]


def _numbers(operands: Sequence[Any]) -> list[float]:
    try:
        return [float(x) for x in operands]
    except (TypeError, ValueError):
        return []


def _is_white(operator: bytes, values: list[float]) -> bool | None:
    """Whether a fill-colour operator sets white (None: not a fill-colour operator we read)."""
    if operator == b"g" and len(values) == 1:
        return values[0] >= 0.99
    if operator == b"rg" and len(values) == 3:
        return min(values) >= 0.99
    if operator == b"k" and len(values) == 4:
        return max(values) <= 0.01
    return None


class HiddenTextFilter:
    """One per page: pass `visit` as pypdf's `visitor_operand_before`."""

    def __init__(self, page_box: Sequence[float]) -> None:
        x0, y0, x1, y1 = (float(v) for v in page_box)
        self.box = (min(x0, x1) - PAGE_MARGIN, min(y0, y1) - PAGE_MARGIN,
                    max(x0, x1) + PAGE_MARGIN, max(y0, y1) + PAGE_MARGIN)
        self.state = _State()
        self.saved: list[_State] = []
        self.dropped: Counter[str] = Counter()

    def visit(self, operator: bytes, operands: list[Any], cm: Sequence[float], tm: Sequence[float]) -> None:
        values = _numbers(operands)
        if operator == b"q":
            self.saved.append(self.state)
        elif operator == b"Q" and self.saved:
            self.state = self.saved.pop()
        elif operator == b"Tr" and len(values) == 1:
            self.state = replace(self.state, render_mode=int(values[0]))
        elif operator == b"Tf" and len(operands) == 2 and (size := _numbers(operands[1:])):
            self.state = replace(self.state, font_size=abs(size[0]))
        elif (white := _is_white(operator, values)) is not None:
            self.state = replace(self.state, white_fill=white)
        elif operator in _SHOW_TEXT:
            reason = self._hidden_reason(cm, tm)
            if reason is not None:
                self._drop(operator, operands)
                self.dropped[reason] += 1

    def _hidden_reason(self, cm: Sequence[float], tm: Sequence[float]) -> str | None:
        if self.state.render_mode in INVISIBLE_RENDER_MODES:
            return "invisible_render_mode"
        if self.state.white_fill:
            return "white_text"
        m = _multiply(tm, cm)
        if self.state.font_size * math.hypot(m[2], m[3]) < MIN_FONT_POINTS:
            return "tiny_text"
        x, y = m[4], m[5]
        if not (self.box[0] <= x <= self.box[2] and self.box[1] <= y <= self.box[3]):
            return "text_off_page"
        return None

    @staticmethod
    def _drop(operator: bytes, operands: list[Any]) -> None:
        """Empty the text operand in place: pypdf then shows nothing for this operator."""
        index = _SHOW_TEXT[operator]
        if index >= len(operands):
            return
        if operator == b"TJ" and isinstance(operands[index], list):
            operands[index].clear()
        else:
            operands[index] = TextStringObject("")
