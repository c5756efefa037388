"""One exception type for every problem a user can fix; the CLI prints its message alone."""


class QidlabError(ValueError):
    """Bad input or an impossible request, with a message that names the problem."""


class NotFittedError(QidlabError):
    """``predict`` was called on an estimator before ``fit``."""
