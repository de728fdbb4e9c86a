"""What every command shares: the typer app, its one-line errors, the consoles, the options."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from ..errors import UsageError
from ..tables import Col


class _OneLineErrors(TyperGroup):
    """Every usage error, ours or click's, becomes one line and exit code 2."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        warnings.showwarning = _one_line_warning
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            _fail(str(exc))
        except typer.TyperException as exc:  # typer's own parse errors
            if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None):
                typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
                sys.exit(2)
            _fail(exc.format_message())  # type: ignore[attr-defined]
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line_warning(message: Any, category: Any, filename: str, lineno: int,
                      file: Any = None, line: Any = None) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)


app = typer.Typer(cls=_OneLineErrors, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Find and isolate where converting or compiling an image classifier "
                       "changes what it predicts.")
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", help="Store directory (SQLite store, cache, logs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column at full width, one line a row, "
                                       "however wide (a narrow terminal leaves lesser columns out).")]
PluginOpt = Annotated[Optional[list[Path]], typer.Option("--plugin", help="A plugin file (repeatable).")]
ImagesOpt = Annotated[Optional[Path], typer.Option("--images", help="Directory of JPEG/PNG images (recursive).")]
WeightsOpt = Annotated[str, typer.Option("--weights", help="calibrated, imagenet (from disk only) or a weights file.")]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


class Status:
    """A rich spinner that the executor's listener updates: what is running right now."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self._status = console.status("starting") if self.enabled else None

    def __call__(self, what: str) -> None:
        if self._status is not None:
            self._status.update(what)

    def __enter__(self) -> "Status":
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


#: The columns of a two-column what/value table (``run``, ``show``).
KEY_VALUE = [Col("what", "name"), Col("value")]
