"""Errors a user can act on. The CLI prints their message as one line and exits 2."""


class UsageError(Exception):
    """Bad usage or bad input: one clear line for the user, exit code 2, no traceback."""


class MissingExtra(UsageError):
    """A command needs a framework that is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"this needs {module!r}, which is not installed: pip install 'fuzzconv[{extra}]'"
        )
        self.module = module
        self.extra = extra


class ChainError(UsageError):
    """A pipeline whose step formats do not fit together."""
