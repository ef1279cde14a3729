"""Model families: each is one class with one interface (:class:`mmgenre.families.base.Model`).

``neural.NeuralModel`` is every registered head over its frozen encoders; ``tfidf.TfidfLogReg``
the TF-IDF + logistic-regression baseline. The registry of model names is :mod:`mmgenre.models`.
"""
