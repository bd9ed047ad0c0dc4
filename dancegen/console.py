"""Console output shared by the CLI and long-running library code: logging level, progress bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

_VERBOSITY = 1  # 0 quiet, 1 normal, 2 verbose


def set_verbosity(level: int) -> None:
    global _VERBOSITY
    _VERBOSITY = level


def verbosity() -> int:
    return _VERBOSITY


def _console():
    from rich.console import Console

    return Console(stderr=True)


def info(msg: str) -> None:
    """Print a status line to stderr unless --quiet."""
    if _VERBOSITY >= 1:
        _console().print(msg, highlight=False, soft_wrap=True)


def debug(msg: str) -> None:
    if _VERBOSITY >= 2:
        _console().print(f"[dim]{msg}[/dim]", highlight=False)


class _Bar:
    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def update(self, **kw) -> None:
        if self._p is not None:
            self._p.update(self._t, **kw)


@contextlib.contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[_Bar]:
    """A rich progress bar on stderr (silent with --quiet or when stderr is not a terminal and not verbose)."""
    show = _VERBOSITY >= 1 and (sys.stderr.isatty() or _VERBOSITY >= 2)
    if not show:
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=_console(), transient=False) as p:
        yield _Bar(p, p.add_task(description, total=total))


@contextlib.contextmanager
def spinner(description: str) -> Iterator[None]:
    """A spinner with elapsed time on stderr for work whose length is not known up front (quiet: nothing)."""
    if _VERBOSITY < 1 or not (sys.stderr.isatty() or _VERBOSITY >= 2):
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=_console(),
                  transient=True) as p:
        p.add_task(description, total=None)
        yield


#: Environment switches that silence other libraries' progress bars and log chatter (tqdm reads TQDM_* defaults from
#: the environment: diffusers' and transformers' loading bars are tqdm bars).
QUIET_LOG_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}
"""Read by transformers / diffusers when their loggers are first set up (an import during the command)."""
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **QUIET_LOG_ENV}


@contextlib.contextmanager
def quiet_libraries(active: bool = True, bars: bool = True) -> Iterator[None]:
    """While active: no third-party warnings or info logs (only their errors), and with ``bars`` (--quiet) no
    third-party progress bars either. The CLI is active at the default verbosity without bars (a user sees dancegen's
    lines and the sampling bars, not transformers' or PIL's notices) and inactive with --verbose. The environment and
    warning filters are restored afterwards (so a library caller or a test process is left as it was)."""
    if not active:
        yield
        return
    import logging
    import os
    import warnings

    env = QUIET_ENV if bars else QUIET_LOG_ENV
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # read by tqdm / huggingface_hub / transformers / diffusers when they are first imported
    patched = None
    if bars and "tqdm.std" in sys.modules:  # tqdm read its environment at import: switch its bars off for this command
        bar_cls = sys.modules["tqdm.std"].tqdm
        original_init = bar_cls.__init__

        def silent_init(self, *args, **kwargs):
            kwargs["disable"] = True
            original_init(self, *args, **kwargs)

        bar_cls.__init__, patched = silent_init, (bar_cls, original_init)
    loggers = [logging.getLogger(n) for n in ("transformers", "diffusers", "huggingface_hub", "PIL")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if patched is not None:
            patched[0].__init__ = patched[1]
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
