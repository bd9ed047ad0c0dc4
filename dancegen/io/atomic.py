"""Atomic file and folder writes: an output is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_hidden(path: str | os.PathLike) -> bool:
    """Hidden entries (a leading dot), among them every temporary `.part` file or folder of this module: inputs that
    list a folder skip them, so a crashed run's leftovers are never read as items."""
    return Path(path).name.startswith(".")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its files
    return True


#: Per folder, the temporary entries (`.*.part*`) it held when this process first wrote there. Listing a folder on
#: every write would make writing N files into one folder (a frame per file) cost N listings; leftovers of killed
#: writers are already there at the first listing, and entries made later belong to live writers.
_PART_INDEX: dict[Path, set[str]] = {}


def _parts_in(folder: Path) -> set[str]:
    key = folder.resolve()
    if key not in _PART_INDEX:
        with os.scandir(folder) as it:
            _PART_INDEX[key] = {e.name for e in it if e.name.startswith(".") and ".part" in e.name}
    return _PART_INDEX[key]


def sweep_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `path` left by a writer that was killed (kill -9, power loss): their names
    carry the writer's process id, and only those of processes no longer running go. Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    names = _parts_in(path.parent)
    removed = []
    for name in sorted(names):
        stem = next((s for s in (path.name, path.stem) if name.startswith(f".{s}.") and ".part" in name[len(s) + 2:]),
                    None)
        if stem is None:
            continue
        pid = name[len(stem) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        cand = path.parent / name
        if cand.is_dir():
            shutil.rmtree(cand, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                cand.unlink()
        names.discard(name)
        removed.append(cand)
    return removed


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    # Same folder as the target so os.replace is a rename on one file system. Keep the extension last:
    # writers such as PyAV and OpenCV choose the container from it. The process id in the name lets a later
    # writer of the same path remove the file if this process dies before the rename (sweep_stale_parts).
    sweep_stale_parts(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".part{suffix or path.suffix}",
                                dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the output the mode an ordinary open() would (0666 minus the umask).
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed.

    Example:
        with atomic_path("out.mp4") as tmp:
            write_something(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


OWNED_MARKER = ".dancegen"
"""A hidden file in every folder `atomic_dir` writes: the folder is dancegen's, so a rerun may replace it. A folder
without it that holds anything is the user's and is never replaced (folder inputs skip hidden entries)."""


def check_replaceable_dir(path: str | os.PathLike) -> None:
    """Refuse, before any work, to replace ``path`` when it is a file or a folder with files dancegen did not write.

    Raises:
        InputError: naming the path and what to do.
    """
    from dancegen.errors import InputError

    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError("exists and is a file; the output here is a folder (pick another -o)", path)
    if (path / OWNED_MARKER).is_file():
        return
    if any(not is_hidden(p) for p in path.iterdir()):
        raise InputError("folder exists and holds files dancegen did not write; refusing to replace it (pick another "
                         "-o, or empty the folder)", path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True, replace_foreign: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path`, on error it is removed.

    The folder is marked as dancegen's (`OWNED_MARKER`). An existing `path` is replaced only when `overwrite` and it
    is empty or dancegen's (`check_replaceable_dir`), unless `replace_foreign` (developer tools that rewrite a
    bundled model in place)."""
    path = Path(path)
    if overwrite and not replace_foreign:
        check_replaceable_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        (tmp / OWNED_MARKER).write_text("written by dancegen; a rerun may replace this folder\n")
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            if not replace_foreign:
                check_replaceable_dir(path)  # again: the user may have put files there meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part.old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def save_npz(path: str | os.PathLike, compressed: bool = False, **arrays) -> None:
    """`numpy.savez` (or `savez_compressed`) of ``arrays`` to `path`, atomically (numpy fixes the archive's dates:
    same arrays, same bytes)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)


def save_keyed_npz(path: str | os.PathLike, key: str, arrays: dict, compressed: bool = False) -> None:
    """A cache file: ``arrays`` plus the ``key`` (a string of the settings that made them), for `load_keyed_npz`."""
    import numpy as np

    save_npz(path, compressed, key=np.array(key), **arrays)


def load_keyed_npz(path: str | os.PathLike, key: str) -> dict | None:
    """The arrays of a `save_keyed_npz` cache file made with the same ``key``; None when it is missing, stale or
    unreadable (a cache is remade, never trusted)."""
    import zipfile

    import numpy as np

    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file`, atomically and byte-reproducibly: the header's metadata comes out in sorted
    key order (safetensors writes it from a hash map, so two or more keys came out in a different order from one
    process to the next: same weights, different bytes). The header keeps its length, so no offset moves."""
    import json
    import struct

    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        if metadata and len(metadata) > 1:
            with open(tmp, "r+b") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                raw = fh.read(n)
                header = json.loads(raw)
                header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
                text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
                if len(text) > n:  # never: the same keys and values, reordered
                    raise RuntimeError(f"{path}: safetensors header grew when sorted")
                fh.seek(8)
                fh.write(text + b" " * (n - len(text)))
    return path
