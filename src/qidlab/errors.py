"""One exception type for every problem a user can fix; the CLI prints its message alone."""

from __future__ import annotations

from typing import Sequence


class QidlabError(ValueError):
    """Bad input or an impossible request, with a message that names the problem.

    ``params``: the library parameters the message is about, as the Python API spells them
    (``drop_highest``); the message writes each in backticks (`drop_highest`), so that the
    CLI can print the flag that sets it instead (``--drop-highest``)."""

    def __init__(self, *args, params: Sequence[str] = ()):
        super().__init__(*args)
        self.params = tuple(params)


class NotFittedError(QidlabError):
    """``predict`` was called on an estimator before ``fit``."""
