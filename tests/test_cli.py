"""CLI: fast start-up (no heavy imports), help with examples for every verb, one-line errors with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dancegen.cli import app

runner = CliRunner()


def _verbs():
    """Every leaf command as its argv path, e.g. ["flow"] or ["pose", "render"]."""
    import typer.main

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # typer vendors click; groups have .commands
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, path + [name])
        else:
            yield path

    return list(walk(typer.main.get_command(app), []))


def test_help_and_import_do_not_load_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from dancegen.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'librosa', 'cv2', 'av', 'scipy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`dancegen --help` imported {out}"


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("dancegen ")


@pytest.mark.parametrize("verb", _verbs(), ids=" ".join)
def test_every_verb_has_help_with_an_example(verb):
    r = runner.invoke(app, [*verb, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and f"dancegen {' '.join(verb)}" in r.output


@pytest.mark.parametrize("verb", [[], *_verbs()], ids=lambda v: " ".join(v) or "top")
def test_help_shows_no_python_types(verb):
    """Issue 15: a flag's help row read `--quiet <bool>` (as if it took a value), a repeatable option `<list[str]>`."""
    r = runner.invoke(app, [*verb, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for python_type in ("<bool>", "<list[", "<NoneType>", "<Path>"):
        assert python_type not in r.output, r.output


def test_bad_device_is_one_line_exit_2():
    from dancegen.errors import InputError
    from dancegen.runtime import resolve_device

    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")
