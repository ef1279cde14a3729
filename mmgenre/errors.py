"""Errors that mmgenre raises on purpose, with messages meant for a person."""


class InputError(ValueError):
    """Bad user-supplied input: a file, an image, a plot, a checkpoint or a config.

    It is a ``ValueError`` so callers that only know the standard library can still catch it.
    The message always names the offending file or field.
    """


class EncoderUnavailableError(RuntimeError):
    """An encoder's weights cannot be found (no internet here); the message says what to use."""
