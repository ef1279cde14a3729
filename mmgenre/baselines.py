"""Non-neural baselines in the same protocol: TF-IDF + one-vs-rest logistic regression on plots.

The fitted model is stored as plain arrays (vocabulary, idf, coefficients), never pickled,
so its checkpoint loads through the same safetensors path as every head.
"""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from .genres import N_GENRES

TFIDF_PARAMS = {"sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2, "max_features": 50_000,
                "stop_words": "english", "strip_accents": "unicode"}


class TfidfLogReg:
    """TF-IDF (uni+bigrams) + one logistic regression per genre (scikit-learn)."""

    name = "tfidf_logreg"
    modalities = ("text",)

    def __init__(self, C: float = 4.0):
        self.C = C
        self.vectorizer: TfidfVectorizer | None = None
        self.coef: np.ndarray | None = None        # (n_genres, V)
        self.intercept: np.ndarray | None = None   # (n_genres,)

    def fit(self, plots: list[str], y: np.ndarray, seed: int = 0) -> "TfidfLogReg":
        self.vectorizer = TfidfVectorizer(**TFIDF_PARAMS)
        x = self.vectorizer.fit_transform(plots)
        n_genres = y.shape[1]
        self.coef = np.zeros((n_genres, x.shape[1]), dtype=np.float32)
        self.intercept = np.zeros(n_genres, dtype=np.float32)
        trainable = [j for j in range(n_genres) if 0 < y[:, j].sum() < len(y)]
        clf = OneVsRestClassifier(LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced",
                                                     random_state=seed))
        clf.fit(x, y[:, trainable])
        for k, j in enumerate(trainable):
            self.coef[j] = clf.estimators_[k].coef_[0]
            self.intercept[j] = clf.estimators_[k].intercept_[0]
        for j in set(range(n_genres)) - set(trainable):  # a constant genre: its base rate, squashed
            rate = float(np.clip(y[:, j].mean(), 1e-4, 1 - 1e-4))
            self.intercept[j] = np.log(rate / (1 - rate))
        return self

    def decision_function(self, plots: list[str]) -> np.ndarray:
        x = self.vectorizer.transform(plots)
        return np.asarray(x @ self.coef.T) + self.intercept

    def predict_proba(self, plots: list[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(plots)))

    # -- storage as plain arrays ------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        weights = {"idf": self.vectorizer.idf_.astype(np.float32), "coef": self.coef,
                   "intercept": self.intercept}
        return weights, {"C": self.C, "vocabulary": vocab}

    @classmethod
    def from_state(cls, weights: dict[str, np.ndarray], hparams: dict) -> "TfidfLogReg":
        """Rebuild from :meth:`state`; ValueError when the arrays do not fit the vocabulary."""
        model = cls(C=float(hparams.get("C", 4.0)))
        words = hparams["vocabulary"]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("'vocabulary' must be a list of strings")
        vocab = {w: i for i, w in enumerate(words)}
        if set(weights) != {"idf", "coef", "intercept"}:
            raise ValueError(f"expected arrays idf, coef, intercept; got {sorted(weights)}")
        shapes = {"idf": (len(words),), "coef": (N_GENRES, len(words)), "intercept": (N_GENRES,)}
        wrong = [f"{k} {weights[k].shape} (expected {v})" for k, v in shapes.items() if weights[k].shape != v]
        if wrong or len(vocab) != len(words):
            raise ValueError("; ".join(wrong) or "'vocabulary' has repeated words")
        params = {k: v for k, v in TFIDF_PARAMS.items() if k not in ("max_features", "min_df")}
        model.vectorizer = TfidfVectorizer(vocabulary=vocab, **params)
        model.vectorizer.idf_ = weights["idf"].astype(np.float64)
        model.coef, model.intercept = weights["coef"], weights["intercept"]
        return model
