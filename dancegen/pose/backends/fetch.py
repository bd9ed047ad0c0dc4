"""Install step for the BlazePose model files (stack-notes.md §2): take them out of the mediapipe 0.10.21 wheel.

The default pose backend runs MediaPipe's own `pose_detection.tflite` and `pose_landmark_full.tflite`
(Apache-2.0) with LiteRT. The last PyPI wheel that ships them is `mediapipe==0.10.21`; it pins numpy<2, so we
never install it: `pip download --no-deps` fetches the wheel into a temporary folder, the two files are extracted,
checked against the SHA-256 recorded below and written to `$DANCEGEN_HOME/models/blazepose/`. Nothing else is
written. This runs at install time (`python -m dancegen.pose.backends.fetch`), never silently at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from dancegen.errors import DanceGenError, MissingWeightsError

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"

#: file name in the models dir -> (path inside the wheel, SHA-256 of the file). Hashes recorded from the
#: cp311 manylinux_2_28 wheel; the tflite files are the same bytes in every platform's wheel of one release.
BLAZEPOSE_FILES: dict[str, tuple[str, str]] = {
    "pose_detection.tflite": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    ),
    "pose_landmark_full.tflite": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
}

FETCH_COMMAND = "python -m dancegen.pose.backends.fetch"


def dancegen_home() -> Path:
    """`$DANCEGEN_HOME`, default `~/.cache/dancegen`."""
    return Path(os.environ.get("DANCEGEN_HOME") or Path.home() / ".cache" / "dancegen").expanduser()


def blazepose_dir() -> Path:
    """Default folder of the BlazePose files: `$DANCEGEN_HOME/models/blazepose`."""
    return dancegen_home() / "models" / "blazepose"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_blazepose(model_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the two BlazePose files, or MissingWeightsError naming the missing ones and the fix.

    Args:
        model_dir: Folder holding the files; default `blazepose_dir()`.

    Returns:
        `{"pose_detection.tflite": path, "pose_landmark_full.tflite": path}`.
    """
    folder = Path(model_dir) if model_dir is not None else blazepose_dir()
    paths = {name: folder / name for name in BLAZEPOSE_FILES}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        where = "" if model_dir is None else f" --dest {folder}"
        raise MissingWeightsError(
            f"BlazePose model file(s) missing: {', '.join(missing)} (looked in {folder}); "
            f"fetch them with `{FETCH_COMMAND}{where}` (extracts them from the PyPI wheel {MEDIAPIPE_REQUIREMENT})"
        )
    return paths


def _download_wheel(tmp: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        MEDIAPIPE_REQUIREMENT,
        "-d",
        str(tmp),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise DanceGenError(f"`{' '.join(cmd[2:])}` failed: {tail[0]}")
    return wheels[0]


def extract_blazepose(wheel: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Path]:
    """Copy the two tflite files out of a mediapipe wheel into `dest`, verifying their SHA-256.

    Both files are checked before either is written, and each is written atomically, so a bad wheel leaves
    `dest` untouched.

    Raises:
        DanceGenError: the wheel lacks a file or a hash does not match.
    """
    from dancegen.io.atomic import write_bytes

    wheel, dest = Path(wheel), Path(dest)
    payload = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise DanceGenError(f"not a readable wheel: {e}", path=wheel) from None
    with zf:
        names = set(zf.namelist())
        for name, (inner, digest) in BLAZEPOSE_FILES.items():
            if inner not in names:
                raise DanceGenError(f"{inner} is not in this wheel (need {MEDIAPIPE_REQUIREMENT})", path=wheel)
            data = zf.read(inner)
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                raise DanceGenError(f"SHA-256 mismatch for {inner}: expected {digest}, got {got}", path=wheel)
            payload[name] = data
    out = {}
    for name, data in payload.items():
        write_bytes(dest / name, data)
        os.chmod(dest / name, 0o644)  # mkstemp creates 0600; the models are meant to be readable by all
        out[name] = dest / name
    return out


def fetch_blazepose(
    dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None, force: bool = False
) -> dict[str, Path]:
    """Install the BlazePose files into `dest` (default `blazepose_dir()`); a no-op when they are already there.

    Args:
        dest: Target folder.
        wheel: A local mediapipe 0.10.21 wheel to extract from instead of `pip download` (offline installs).
        force: Re-fetch even when valid files are present.

    Returns:
        The installed paths by file name.
    """
    dest = Path(dest) if dest is not None else blazepose_dir()
    if not force:
        present = {n: dest / n for n in BLAZEPOSE_FILES}
        if all(p.is_file() and sha256_file(p) == BLAZEPOSE_FILES[n][1] for n, p in present.items()):
            return present
    if wheel is not None:
        return extract_blazepose(wheel, dest)
    with tempfile.TemporaryDirectory(prefix="dancegen-mediapipe-") as tmp:
        return extract_blazepose(_download_wheel(Path(tmp)), dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dancegen.pose.backends.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("--dest", default=None, help=f"target folder (default {blazepose_dir()})")
    parser.add_argument("--wheel", default=None, help="extract from this local mediapipe wheel instead of pip")
    parser.add_argument("--force", action="store_true", help="fetch again even if the files are present")
    args = parser.parse_args(argv)
    try:
        paths = fetch_blazepose(args.dest, wheel=args.wheel, force=args.force)
    except DanceGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, p in paths.items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
