"""Test helpers: a generated dataset in the official MM-IMDb layout (numpy + PIL only).

Posters and plots carry a weak genre signal (poster colour, plot keywords), so a model trained
on the tiny set can beat chance, while noise and filler words keep it from being trivial.
"""
from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmgenre.genres import GENRES, N_GENRES

# One hue per genre, spread around the colour wheel.
GENRE_COLOURS: dict[str, tuple[int, int, int]] = {
    g: tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / N_GENRES, 0.75, 0.9))
    for i, g in enumerate(GENRES)
}
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "Drama": ("grief", "family", "struggle", "secret"),
    "Comedy": ("hilarious", "prank", "awkward", "wedding"),
    "Romance": ("love", "kiss", "heart", "romance"),
    "Thriller": ("suspense", "stalker", "conspiracy", "chase"),
    "Crime": ("detective", "heist", "gangster", "murder"),
    "Action": ("explosion", "fight", "mercenary", "gunfire"),
    "Adventure": ("quest", "treasure", "jungle", "voyage"),
    "Horror": ("ghost", "haunted", "demon", "blood"),
    "Documentary": ("interviews", "footage", "real", "archive"),
    "Mystery": ("clue", "vanished", "riddle", "puzzle"),
    "Sci-Fi": ("spaceship", "robot", "alien", "future"),
    "Fantasy": ("wizard", "dragon", "kingdom", "magic"),
    "Family": ("kids", "puppy", "holiday", "parents"),
    "Biography": ("life", "true", "famous", "career"),
    "War": ("soldiers", "battle", "army", "trenches"),
    "History": ("empire", "century", "king", "revolution"),
    "Music": ("band", "concert", "singer", "guitar"),
    "Animation": ("cartoon", "animated", "talking", "toys"),
    "Musical": ("songs", "dance", "stage", "chorus"),
    "Western": ("cowboy", "sheriff", "ranch", "outlaw"),
    "Sport": ("team", "coach", "championship", "boxing"),
    "Short": ("brief", "vignette", "minutes", "sketch"),
    "Film-Noir": ("femme", "fatale", "shadows", "cynical"),
}
FILLER_WORDS = ("the", "a", "man", "woman", "city", "town", "finds", "meets", "must", "after",
                "years", "young", "old", "story", "night", "friends", "where", "becomes")
_TITLE_WORDS = ("Silent", "Last", "Red", "Broken", "Hidden", "Golden", "Night", "River",
                "Empire", "Shadow", "Summer", "Road", "Storm", "Garden", "Letter", "Promise")


def _draw_poster(rng: np.random.Generator, genres: list[str],
                 size: tuple[int, int]) -> Image.Image:
    w, h = size
    base = np.mean([GENRE_COLOURS[g] for g in genres], axis=0)
    base = np.clip(base + rng.normal(0, 25, 3), 0, 255)
    # Vertical gradient from the genre colour to a darker shade, plus pixel noise.
    shade = np.linspace(1.0, 0.55, h)[:, None, None]
    arr = base[None, None, :] * shade * np.ones((h, w, 1))
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = int(rng.integers(x0 + 4, w)), int(rng.integers(y0 + 4, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    return img


def _plot(rng: np.random.Generator, genres: list[str]) -> list[str]:
    sentences = []
    for _ in range(int(rng.integers(1, 3))):
        words = []
        for _ in range(int(rng.integers(8, 16))):
            if rng.random() < 0.35:
                words.append(str(rng.choice(GENRE_WORDS[str(rng.choice(genres))])))
            elif rng.random() < 0.1:     # keywords of an unrelated genre: label noise
                words.append(str(rng.choice(GENRE_WORDS[str(rng.choice(GENRES))])))
            else:
                words.append(str(rng.choice(FILLER_WORDS)))
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def make_tiny_mmimdb(root: Path, *, n_train: int = 24, n_dev: int = 12, n_test: int = 12,
                     seed: int = 0, missing_poster_every: int | None = 5,
                     empty_plot_every: int | None = 7,
                     image_size: tuple[int, int] = (64, 96)) -> Path:
    """Write a small random MM-IMDb-layout dataset under ``root`` and return ``root``.

    Movie number i (counted across train, dev, test) has no poster when
    ``i % missing_poster_every == missing_poster_every - 1`` and an empty plot (``[]``) when
    ``i % empty_plot_every == empty_plot_every - 1``, except that a movie never lacks both.
    Each movie has 1-3 genres; with ``n_train >= 23`` every genre occurs in train.
    ``image_size`` is (width, height).
    """
    root = Path(root)
    dataset = root / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = n_train + n_dev + n_test
    ids = [f"{int(i):07d}" for i in rng.choice(np.arange(100_000, 9_999_999), total,
                                                   replace=False)]
    first_genres = rng.permutation(N_GENRES)
    # Rarer genres get lower sampling weight, as in MM-IMDb (GENRES is in frequency order).
    weights = 1.0 / np.arange(1, N_GENRES + 1) ** 0.5
    weights /= weights.sum()
    splits: dict[str, list[str]] = {"train": ids[:n_train],
                                    "dev": ids[n_train:n_train + n_dev],
                                    "test": ids[n_train + n_dev:]}
    for i, imdb_id in enumerate(ids):
        n_genres = int(rng.integers(1, 4))
        picked = [int(g) for g in rng.choice(N_GENRES, n_genres, replace=False, p=weights)]
        if i < min(n_train, N_GENRES):          # every genre at least once in train
            primary = int(first_genres[i])
            picked = [primary] + [g for g in picked if g != primary][: n_genres - 1]
        genres = [GENRES[g] for g in picked]
        no_poster = bool(missing_poster_every) and i % missing_poster_every == missing_poster_every - 1
        empty_plot = (bool(empty_plot_every) and i % empty_plot_every == empty_plot_every - 1
                      and not no_poster)
        record = {
            "imdb_id": imdb_id,
            "title": " ".join(rng.choice(_TITLE_WORDS, int(rng.integers(1, 4)), replace=False)),
            "year": int(rng.integers(1930, 2016)),
            "plot": [] if empty_plot else _plot(rng, genres),
            "genres": genres,
        }
        (dataset / f"{imdb_id}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        if not no_poster:
            _draw_poster(rng, genres, image_size).save(dataset / f"{imdb_id}.jpeg", quality=90)
    (root / "split.json").write_text(json.dumps(splits, indent=1), encoding="utf-8")
    return root
