"""Output paths a verb may write, checked before any work: never a folder or a file the user owns, never under a
file, never in a read-only folder (the CLI checks every verb's ``out`` with `check_output_location`)."""

from __future__ import annotations

import os
from pathlib import Path

from dancegen.errors import InputError
from dancegen.io.atomic import check_replaceable_dir

FILE_SUFFIXES = (".mp4", ".mov", ".gif", ".png", ".jpg", ".jpeg", ".webp", ".npz", ".npy", ".json", ".csv", ".wav",
                 ".yaml", ".yml", ".safetensors")
"""Names with these suffixes are files: an existing folder of that name is never an output."""
MEDIA_SUFFIXES = (".mp4", ".mov", ".gif", ".png", ".jpg", ".jpeg", ".webp")
"""Outputs that carry dancegen's provenance: an existing one without it is the user's and is never replaced."""


def check_output_location(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output that can never be written (a regular file among its parents, a parent that
    cannot be written to, a folder named like a file) or that would replace a video / image dancegen did not write.

    Raises:
        InputError: naming the output and the blocking path.
    """
    out = Path(path)
    if out.suffix.lower() in FILE_SUFFIXES and out.is_dir():
        raise InputError("is a folder; the output here is a file (pick another -o)", out)
    if out.is_file() and out.stat().st_size > 0 and out.suffix.lower() in MEDIA_SUFFIXES:
        from dancegen.io.video import read_video_metadata

        try:
            ours = "dancegen" in read_video_metadata(out)
        except InputError:  # not even a readable video / image: certainly not ours
            ours = False
        if not ours:
            raise InputError("exists and was not written by dancegen; refusing to replace it (pick another -o, or "
                             "delete it first)", out)
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write here: {parent} is a file, not a folder", out)
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write here: the folder {parent} is read-only", out)


def check_video_output(out: str | os.PathLike) -> Path:
    """An output path `io.video.write_video` can write (checked before any work is done)."""
    from dancegen.io.video import VIDEO_OUTPUTS

    out = Path(out)
    if out.suffix.lower() not in VIDEO_OUTPUTS:
        raise InputError(f"cannot write {out.suffix!r} video; use .mp4, .mov, .gif or a folder (no suffix)", out)
    if out.suffix:
        if out.is_dir():
            raise InputError("is a folder; give the video's file name, or a folder name without a suffix", out)
    else:
        check_replaceable_dir(out)  # a folder of PNG frames replaces the folder whole
    return out
