"""The what-if text boxes (Gradio, CLI): word or cell positions and word replacements as typed.

    parse_positions("0, 3-5, detective", words=exp.words) -> [0, 3, 4, 5, 17]
    parse_replacements("3=happy; 10=a sad day") -> {3: "happy", 10: "a sad day"}
"""
from __future__ import annotations

import re

from mmgenre.errors import InputError

MAX_BOX_CHARS = 5000


def parse_positions(text: str | None, *, words: list[str] | None = None) -> list[int]:
    """Positions typed in a box, e.g. "0, 3-5, detective": integers, ranges "a-b" and, given
    ``words``, words (every position holding that word, case-insensitive). Range checks are the edit's."""
    text = (text or "").strip()
    if len(text) > MAX_BOX_CHARS:
        raise InputError(f"the positions box holds {len(text):,} characters (limit {MAX_BOX_CHARS:,})")
    folded = [w.casefold() for w in words or []]
    out: list[int] = []
    for item in filter(None, (part.strip() for part in re.split(r"[,;\s]+", text))):
        span = re.fullmatch(r"(\d+)-(\d+)", item)
        if item.isdigit():
            out.append(int(item))
        elif span:
            a, b = int(span[1]), int(span[2])
            if not 0 <= b - a <= MAX_BOX_CHARS:
                raise InputError(f"range {item!r}: expected a-b with a <= b")
            out.extend(range(a, b + 1))
        elif words is not None and item.casefold() in folded:
            out.extend(i for i, w in enumerate(folded) if w == item.casefold())
        else:
            raise InputError(f"{item[:40]!r} is neither a position, a range a-b" +
                             (" nor a word of the plot" if words is not None else ""))
    return sorted(set(out))


def parse_replacements(text: str | None) -> dict[int, str]:
    """Replacements typed in a box: "3=happy; 10=a sad day" -> {3: "happy", 10: "a sad day"}
    (entries separated by ';' or new lines; an empty new text deletes the word)."""
    text = (text or "").strip()
    if len(text) > MAX_BOX_CHARS:
        raise InputError(f"the replacements box holds {len(text):,} characters (limit {MAX_BOX_CHARS:,})")
    out: dict[int, str] = {}
    for entry in filter(None, (e.strip() for e in re.split(r"[;\n]", text))):
        m = re.fullmatch(r"(\d+)\s*=(.*)", entry)
        if not m:
            raise InputError(f"replacement {entry[:40]!r}: expected position=new text, e.g. 3=happy")
        out[int(m[1])] = m[2].strip()
    return out
