"""Error messages for visitors: plain text that names files as the visitor named them and never
shows a server path (upload folders, checkpoint folders, the repository).

Messages are not HTML-escaped here: API clients get them verbatim. Gradio renders an error as
HTML in its toast (after its own sanitiser), so the only visitor-supplied text a message quotes,
a file name, goes through :func:`display_name`, which drops markup and control characters.
"""
from __future__ import annotations

import re
import unicodedata

from mmgenre.poster import UNNAMED

# An absolute POSIX path of two or more parts, not inside a URL ("https://host/a/b") or a
# fraction ("1/8"): the characters before it may not be a word character, '.', ':', '/' or '~'.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"(),;:<>]+){2,}/?")
_NAME_LIMIT = 80


def display_name(name: str | None) -> str:
    """A visitor's file name, safe to quote: its last path part, without control characters or
    ``< > &``, at most 80 characters; ``"the poster"`` when nothing is left."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = "".join("_" if c in "<>&" or unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
                   for c in base).strip()
    if len(base) > _NAME_LIMIT:
        base = base[:_NAME_LIMIT - 1] + "\u2026"
    return base or UNNAMED


def _last_part(match: re.Match) -> str:
    return [p for p in match.group(0).split("/") if p][-1]


def public_message(exc: BaseException | str) -> str:
    """``exc``'s message with every absolute server path reduced to its last part
    ("/srv/ckpts/gmu: weights ..." -> "gmu: weights ...")."""
    return _ABS_PATH.sub(_last_part, str(exc))


def has_server_path(text: str) -> bool:
    """True when ``text`` still holds an absolute path of two or more parts."""
    return _ABS_PATH.search(str(text)) is not None
