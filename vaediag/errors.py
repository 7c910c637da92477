"""The error hierarchy. Library code raises these; only the CLI prints them and exits.

Each class carries the process exit code the CLI uses for it (ARCHITECTURE: 2 for usage errors and
unreadable input, 130 for interrupts). Messages are one line that says what is wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "VaediagError",
    "UsageError",
    "InputError",
    "NoRunsError",
    "CorruptLogError",
    "RulesError",
    "TagsError",
    "DataError",
    "ConfigError",
    "ControlFileError",
    "CheckpointError",
    "GradientError",
    "Interrupted",
]


class VaediagError(Exception):
    """Base of every error vaediag raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(VaediagError):
    """A command line or argument combination that cannot work."""


class InputError(VaediagError):
    """A path that is missing, unreadable or not what was expected."""


class NoRunsError(InputError):
    """A directory tree that holds no TensorBoard event file."""


class CorruptLogError(InputError):
    """An event file that cannot be read at all (not merely a damaged record)."""


class RulesError(VaediagError):
    """A rules or targets TOML file that is malformed or names unknown keys."""


class TagsError(VaediagError):
    """A tag-mapping TOML file that is malformed or maps to an unknown term."""


class DataError(VaediagError):
    """Training data (.npy) of the wrong shape, dtype, range or content."""


class ConfigError(VaediagError):
    """A training configuration with an unknown key or an invalid value."""


class ControlFileError(VaediagError):
    """A control.json that is malformed, half-written or of the wrong shape."""


class CheckpointError(VaediagError):
    """A checkpoint that is missing, unreadable or from an incompatible config."""


class GradientError(VaediagError):
    """A loss term or latent head whose per-term gradient cannot be taken (vaediag.integrations.gradients)."""


class Interrupted(VaediagError):
    """The user interrupted the command (Ctrl-C)."""

    exit_code = 130
