"""Errors a user can act on: each carries one line that says what went wrong and what to do.

The command line prints ``str(error)`` and exits non-zero; nothing of this family ever
reaches the user as a traceback.
"""


class CallbotError(Exception):
    """Base of every user-facing error."""

    exit_code = 1


class ConfigError(CallbotError):
    """The configuration is wrong: names the key and the reason."""

    exit_code = 2


class AudioError(CallbotError):
    """An audio file cannot be used (unreadable, not WAV, empty...)."""


class ModelMissing(CallbotError):
    """A model the configuration needs is not installed."""


class ModelRefused(CallbotError):
    """A newly trained model is worse than the one in place: it was not activated."""


class KbError(CallbotError):
    """A knowledge-base file is malformed: names the file and the line."""
