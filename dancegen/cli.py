"""The `dancegen` command line (Typer). Thin by design: parse, call `dancegen.api`, print.

Heavy libraries (torch, diffusers, librosa) are imported inside api functions, so `dancegen --help` is fast.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dancegen import __version__
from dancegen.errors import DanceGenError

app = typer.Typer(
    name="dancegen",
    help="Human dance video generation: animate a photo from poses, dance to music, edit motion, text to character.\n\n"
    "Shared tools: extract-pose, flow, synth. Run `dancegen VERB --help` for an example of each.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    device: str = "auto"
    seed: int = 0


state = State()


def _err(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/bold red] {msg}", markup=True, soft_wrap=True)


def verb(name: str, **kwargs):
    """Register a command; a `DanceGenError` becomes one red line on stderr and exit code 2."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except DanceGenError as e:
                _err(str(e))
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                _err("interrupted; finished outputs are kept, rerun to resume")
                raise typer.Exit(130) from None

        return app.command(name, **kwargs)(wrapper)

    return deco


def _version(value: bool):
    if value:
        typer.echo(f"dancegen {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for every random choice (written to output metadata).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail, progress bars even when piped.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """Global options go before the verb: `dancegen --device cpu --seed 3 synth -o out/`."""
    from dancegen.console import set_verbosity

    state.device, state.seed = device, seed
    set_verbosity(0 if quiet else 2 if verbose else 1)


# ---- verbs ------------------------------------------------------------------------------------------------------
# Each verb: a docstring with an example (shown by --help), options, one call into dancegen.api.


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
