"""The one exception family irconvert raises for problems a user can fix.

The CLI prints any `IRConvertError` as one line and exits non-zero; anything
else is a bug and gets a traceback only with ``--debug``.
"""

from __future__ import annotations


class IRConvertError(Exception):
    """Base class: a problem with the user's input, model, data or environment."""

    def __init__(self, *args: object) -> None:
        # A DataLoader worker's exception comes back to the main process
        # re-created from "Caught X in DataLoader worker process N.\nOriginal
        # Traceback ...": keep the one line that was raised.
        if len(args) == 1 and isinstance(args[0], str) and "\nOriginal Traceback" in args[0]:
            last = args[0].rstrip().splitlines()[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


class ConfigError(IRConvertError, ValueError):
    """A configuration or recipe value is invalid."""


class LoadError(IRConvertError):
    """A model or checkpoint could not be loaded."""


class UnknownArchitectureError(LoadError):
    """An architecture name or a state_dict could not be matched to a model."""


class ConversionError(IRConvertError):
    """A model could not be binarized as asked."""


class DataError(IRConvertError):
    """A data set could not be found, read or matched to the model."""


class ExportError(IRConvertError):
    """A model could not be exported in the requested format."""


class MissingDependencyError(IRConvertError):
    """An optional package (an inference engine, for instance) is not installed."""


class WriteError(IRConvertError, OSError):
    """An output could not be written (no space left, no permission, a read-only disk).

    Also an ``OSError``, so code that catches file-system errors still does.
    """
