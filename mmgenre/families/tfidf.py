"""``TfidfLogReg``: TF-IDF (uni+bigrams) + one logistic regression per genre, on plots only.

The fitted model is stored as plain arrays (vocabulary, idf, coefficients), never pickled, so its
checkpoint loads through the same safetensors path as every head. Its word attributions are
exact: the contribution (tf-idf weight x coefficient) of each vocabulary feature, shared out over
the words that make it up, so the word scores sum to logit - intercept.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from mmgenre.errors import InputError
from mmgenre.explain.faithfulness import ig_completeness
from mmgenre.explain.run import Stage
from mmgenre.explain.text_attr import WordAttribution
from mmgenre.families.base import Model
from mmgenre.genres import GENRES, N_GENRES

TFIDF_PARAMS = {"sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2, "max_features": 50_000,
                "stop_words": "english", "strip_accents": "unicode"}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class TfidfLogReg(Model):
    """TF-IDF (uni+bigrams) + one logistic regression per genre (scikit-learn)."""

    name = "tfidf_logreg"
    encoders: dict = {}  # reads the raw plot

    def __init__(self, C: float = 4.0):
        self.C = C
        self.vectorizer: TfidfVectorizer | None = None
        self.coef: np.ndarray | None = None        # (n_genres, V)
        self.intercept: np.ndarray | None = None   # (n_genres,)

    @classmethod
    def modalities_of(cls, name: str) -> tuple[str, ...]:
        return ("text",)

    @classmethod
    def encoder_kinds_of(cls, name: str) -> list[str]:
        return []  # no encoder: the plot's words themselves

    # -- training and storage ----------------------------------------------------------------
    @classmethod
    def fit(cls, name, movies, features, labels, trainer):
        model = cls().fit_plots([m.plot for m in movies["train"]], labels["train"], seed=trainer.seed)
        return model, {s: model.predict_proba([m.plot for m in ms]) for s, ms in movies.items()}, []

    def fit_plots(self, plots: list[str], y: np.ndarray, seed: int = 0) -> "TfidfLogReg":
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

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        weights = {"idf": self.vectorizer.idf_.astype(np.float32), "coef": self.coef,
                   "intercept": self.intercept}
        return weights, {"name": self.name, "hparams": {"C": self.C, "vocabulary": vocab}}

    @classmethod
    def from_checkpoint(cls, ckpt, *, encoders=None):
        try:
            return cls.from_state(ckpt.weights, ckpt.config["head"]["hparams"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"checkpoint {ckpt.path}: baseline weights do not match its config ({exc})") from None

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

    # -- one movie -------------------------------------------------------------------------
    def decision_function(self, plots: list[str]) -> np.ndarray:
        x = self.vectorizer.transform(plots)
        return np.asarray(x @ self.coef.T) + self.intercept

    def predict_proba(self, plots: list[str]) -> np.ndarray:
        return _sigmoid(self.decision_function(plots))

    def probabilities(self, inputs) -> np.ndarray:
        return self.predict_proba([inputs.plot])[0]

    def explanation(self, inputs, options):
        probs = _sigmoid(self.decision_function([inputs.plot])[0])
        words: dict[int, tuple[np.ndarray, float]] = {}  # target -> (word scores, logit - intercept)

        def text_attribution(exp, targets):
            wa = self.word_scores(inputs.plot, targets)
            exp.attach_words(wa, targets)
            words.update({t: (wa.scores[i], wa.f_diff[i]) for i, t in enumerate(targets)})

        def ablation(exp, targets):
            prior = _sigmoid(np.asarray(self.intercept, dtype=np.float64))  # an empty plot
            exp.modality["ablation"] = {GENRES[t]: {"p": float(probs[t]), "without_poster": float(probs[t]),
                                                    "without_plot": float(prior[t])} for t in targets}

        def faithfulness(exp, targets):
            exp.faithfulness = {"ig_completeness": {GENRES[t]: ig_completeness(*words[t]) for t in targets}}

        stages = [Stage("text_attribution", text_attribution, per_genre=True),
                  Stage("ablation", ablation, optional="ablation")]
        if options.faithfulness:
            stages.append(Stage("faithfulness", faithfulness, optional="faithfulness"))
        return probs, stages

    def word_scores(self, plot: str, targets: Sequence[int]) -> WordAttribution:
        """Exact word contributions: the logit is intercept + sum_j x_j coef_j, where x_j is the
        tf-idf weight of vocabulary feature j (a word or a bigram).

        Each feature's contribution is split equally between its occurrences and, for an n-gram,
        between its n words; stop words and words outside the vocabulary score 0.
        """
        vec = self.vectorizer
        spans = [m.group(0) for m in re.finditer(r"\S+", plot)]
        x = vec.transform([plot]).tocsr()
        contrib = {int(j): float(v) * self.coef[list(targets), j] for j, v in zip(x.indices, x.data)}  # (G,) each
        preprocess, tokenize = vec.build_preprocessor(), vec.build_tokenizer()
        stop = vec.get_stop_words() or frozenset()
        seq = [(tok, w) for w, word in enumerate(spans) for tok in tokenize(preprocess(word)) if tok not in stop]
        lo, hi = vec.ngram_range
        grams = [(" ".join(t for t, _ in seq[i:i + n]), [w for _, w in seq[i:i + n]])
                 for n in range(lo, hi + 1) for i in range(len(seq) - n + 1)]
        vocab = vec.vocabulary_
        counts = Counter(gram for gram, _ in grams if gram in vocab)
        scores = np.zeros((len(targets), len(spans)), dtype=np.float64)
        for gram, owners in grams:
            j = vocab.get(gram)
            if j is None or j not in contrib:
                continue
            share = contrib[j] / (counts[gram] * len(owners))
            for w in owners:
                scores[:, w] += share
        logits = self.decision_function([plot])[0][list(targets)].astype(np.float64)
        intercept = np.asarray(self.intercept, dtype=np.float64)[list(targets)]
        delta = scores.sum(axis=1) - (logits - intercept)  # 0 up to float rounding: the scores are exact
        return WordAttribution(spans, [[] for _ in spans], scores.astype(np.float32), delta, logits - intercept)

    def randomized(self, seed: int) -> "TfidfLogReg":
        """Coefficients redrawn from N(0, std of the fitted coefficients)."""
        clone = copy.copy(self)
        coef = np.asarray(self.coef)
        clone.coef = np.random.default_rng(seed).normal(0.0, float(coef.std()) or 1.0, coef.shape).astype(coef.dtype)
        return clone
