"""Errors shared by every stage.

A batch job records an `ImagineIDError` for the one input that failed and goes on with the rest; the
`kind` class attribute is what lands in `failures/*.parquet` (`error_type`) and in index tables.
"""


class ImagineIDError(Exception):
    """Base class: a clear, one-line reason that one input (or the whole command) could not be done."""

    kind = "error"


class NotBuiltYetError(ImagineIDError):
    """A contract command whose stage has not landed yet."""

    kind = "not_built"
