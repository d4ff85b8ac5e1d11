"""Errors shared by every stage.

A batch job records an `ImagineIDError` for the one input that failed and goes on with the rest; the
`kind` class attribute is what lands in `failures/*.parquet` (`error_type`) and in index tables.
"""


class ImagineIDError(Exception):
    """Base class: a clear, one-line reason that one input (or the whole command) could not be done."""

    kind = "error"


class SettingsError(ImagineIDError, ValueError):
    """A job setting out of its range: raised when the config is built, before any work (a ValueError too,
    so callers that validate settings as values keep working)."""


class NotBuiltYetError(ImagineIDError):
    """A contract command whose stage has not landed yet."""

    kind = "not_built"


PRETRAINED_DOCS = "docs/pretrained.md"  # where each bring-your-own weight file comes from


def see_docs(section: str) -> str:
    """The pointer every pretrained-file error ends with, e.g. "see docs/pretrained.md § FLAME"."""
    return f"see {PRETRAINED_DOCS} § {section}"


class MissingWeightsError(ImagineIDError):
    """A pretrained file the user must bring is not there (nothing is ever downloaded)."""

    kind = "missing_weights"


class MalformedWeightsError(ImagineIDError):
    """A pretrained file is there but is not in the format its loader expects."""

    kind = "malformed_weights"


class UnsafeFileError(MalformedWeightsError):
    """A weight file asked to run code (a pickle global outside the allowed numpy / scipy / torch set)."""

    kind = "unsafe_file"
