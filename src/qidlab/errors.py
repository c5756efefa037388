"""One exception type for every problem a user can fix (the CLI prints its message alone), and the
"did you mean" hint such messages give for a misspelt name."""

from __future__ import annotations

import difflib
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


def did_you_mean(name, known, *, n: int = 3, cutoff: float = 0.5, form: str = "; did you mean {}?") -> str:
    """A hint naming up to ``n`` of ``known`` that look like ``name`` (difflib's ratio at least
    ``cutoff``), comma-separated into ``form``; "" when none does."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return form.format(", ".join(close)) if close else ""
