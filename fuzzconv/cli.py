"""The ``fuzzconv`` command line: thin typer commands that parse options and call the library.

Exit codes: 0 ok, 1 a divergence reproduced (``run``, ``repro``), 2 bad usage or input — always
one line on stderr, never a traceback. The commands live in :mod:`fuzzconv.commands`, a module
per group; importing this module registers them all on :data:`app`.
"""

from __future__ import annotations

from .commands import findings, hunting, zoo  # noqa: F401 - registers their commands
from .commands.base import app

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
