"""Errors the ingest worker turns into an exit code."""


class FatalIngestError(RuntimeError):
    """A configuration the worker cannot run with; the message is one line for the user."""
