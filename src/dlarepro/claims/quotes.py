"""Are the claims' quotes verbatim? A quote may render a formula the extracted text garbles in
[square brackets] and leave out words with an ellipsis (…); every other fragment must appear in the
paper's text, in order (whitespace normalised)."""

from __future__ import annotations

import re
from typing import Iterable

_SPLIT = re.compile(r"\[[^\]]*\]|…")


def fragments(quote: str) -> list[str]:
    """The verbatim pieces of a quote: split at [editorial renderings] and ellipses."""
    pieces = (" ".join(p.split()).strip(" ,;") for p in _SPLIT.split(quote))
    return [p for p in pieces if p]


def missing(quote: str, text: str) -> str | None:
    """The first fragment of ``quote`` not found (in order) in ``text``, or None."""
    flat = " ".join(text.split())
    at = 0
    for piece in fragments(quote):
        found = flat.find(piece, at)
        if found < 0:
            return piece
        at = found + len(piece)
    return None


def quote_problems(entries: Iterable[tuple[str, str]], text: str) -> list[str]:
    """'<name>: "<fragment>" is not in the paper' for every (name, quote) that is not verbatim."""
    out = []
    for name, quote in entries:
        piece = missing(quote, text)
        if piece is not None:
            out.append(f"{name}: {piece!r} is not in the paper's text")
    return out
