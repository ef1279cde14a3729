"""The 23 MM-IMDb genres (Arevalo et al. 2017) and multi-hot helpers."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Official MM-IMDb order (most to least frequent in the full dataset).
GENRES: tuple[str, ...] = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)
N_GENRES = len(GENRES)
GENRE_INDEX = {g: i for i, g in enumerate(GENRES)}

# Genres that occur in the IMDb crawl but that MM-IMDb leaves out (too rare); dropped and counted.
DROPPED_GENRES: tuple[str, ...] = ("News", "Talk-Show", "Reality-TV", "Adult", "Game-Show")


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES = {_key(g): g for g in GENRES + DROPPED_GENRES}
_ALIASES.update({"scifi": "Sci-Fi", "sciencefiction": "Sci-Fi", "noir": "Film-Noir",
                 "biopic": "Biography", "doc": "Documentary"})


def normalize_genre(name: str) -> str | None:
    """Canonical spelling of a genre ('sci fi' -> 'Sci-Fi'), or None when it is unknown."""
    if not isinstance(name, str):
        return None
    return _ALIASES.get(_key(name))


def split_known(genres: Iterable[str]) -> tuple[list[str], list[str]]:
    """(kept MM-IMDb genres in input order without duplicates, dropped or unknown names)."""
    kept: list[str] = []
    dropped: list[str] = []
    for g in genres:
        canon = normalize_genre(g)
        if canon in GENRE_INDEX:
            if canon not in kept:
                kept.append(canon)
        else:
            dropped.append(canon or str(g))
    return kept, dropped


def to_multi_hot(genres: Iterable[str]) -> np.ndarray:
    """(23,) float32 vector; unknown names are ignored (use split_known to count them)."""
    y = np.zeros(N_GENRES, dtype=np.float32)
    for g in split_known(genres)[0]:
        y[GENRE_INDEX[g]] = 1.0
    return y
