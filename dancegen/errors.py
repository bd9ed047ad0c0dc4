"""Errors that the CLI turns into one-line messages with exit code 2.

Library code raises these for problems with the user's input (a corrupt video, a malformed pose
file, mismatched lengths) or missing weights. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class DanceGenError(Exception):
    """Base class for expected, user-facing failures.

    Args:
        message: What is wrong, in one line.
        path: The file or folder the problem is about, if any. It is prefixed to the message.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(DanceGenError):
    """A user-supplied file, folder or argument cannot be used as given."""


class MissingWeightsError(DanceGenError):
    """A model weight file is not available locally; the message says how to get it."""
