"""Read 3D motion files (MDM, HumanML3D, dancegen synth, AIST++, BVH) into one form: HumanML3D-22 joints in metres.

Follows ../shared/specs/latentman.md §2.1 (MDM's text mode yields `[T, 22, 3]` joint positions in the SMPL order,
Y-up, metres, 20 fps) and its "pluggable motion source" note: every reader returns a `Motion` whose `joints` are
`(T, 22, 3)` float32 in `dancegen.pose.skeletons.HUMANML3D22` order, metres, Y-up, the body facing +Z when the source
does (HumanML3D and MDM rotate the first frame to face +Z; AIST++ and BVH keep their own heading).

How `read_motion` picks a reader (content first, then the suffix):

* `.bvh` suffix, or text starting with `HIERARCHY` -> BVH (`read_bvh`).
* `.npy` magic -> the header is parsed with `numpy.lib.format`; a dtype-object payload is unpickled with the
  restricted unpickler (`dancegen.motion.safe_pickle`, never `allow_pickle=True`), a numeric one is read with
  `np.load(..., allow_pickle=False)`.
* `.pkl`/`.pickle` suffix, or a binary pickle (first byte 0x80) -> the restricted unpickler.

and then by what was loaded:

* a dict with `motion` -> MDM `results.npy`: `motion` is `(N, 22, 3, T)` (N = num_samples x num_repetitions, in
  MDM's repetition-major order); sample `sample` is taken and trimmed to `lengths[sample]`; 20 fps; the prompt
  `text[sample]` goes to `meta["text"]`. format "mdm".
* a dict with `keypoints3d_optim` and/or `keypoints3d` -> AIST++ (`keypoints3d_optim`, the smoothed fit, is preferred
  when both are present): `(T, 17, 3)` COCO-17, centimetres, Y-up, 60 fps; mapped by `coco17_to_humanml3d22`.
  format "aist++".
* a numeric `(T, 22, 3)` array -> HumanML3D `new_joints/*.npy` or the synthetic world's `joints3d.npy`. The two are
  the same array; only the frame rate differs. Rule: a sibling `meta.json` (same folder) holding a positive number
  under `fps` (the synthetic `clips` layout writes one) gives the fps and format "synth"; otherwise the file is
  HumanML3D at 20 fps, format "humanml3d". An unreadable or fps-less `meta.json` is ignored.

An explicit `fps` argument overrides every default above. Any problem with the file (missing, unknown format, wrong
shape, NaN/inf, zero frames, coordinates beyond 1e4 m, a refused pickle global) is one `InputError` naming the file.

`project_motion` turns a Motion into a COCO-18 `PoseSequence` through one fixed front camera, for the 2D tools.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.pose.skeletons import COCO17, HUMANML3D22

#: File suffixes the 2D pose tools route to `read_motion` (see `is_motion_file`).
MOTION_SUFFIXES = (".npy", ".pkl", ".pickle", ".bvh")

#: Frame rates of the sources (HumanML3D/MDM resample to 20 fps; AIST++ is captured at 60 fps).
HUMANML3D_FPS = 20.0
AIST_FPS = 60.0

#: Coordinates beyond this many metres (after unit conversion) are taken as corrupt or in the wrong units.
MAX_ABS_METRES = 1e4

#: Where spine1/2/3 sit along pelvis -> neck when they are estimated (AIST++, or a BVH whose spine between the
#: pelvis and the neck does not have exactly three joints): fractions of the pelvis -> neck path, from the heights
#: of spine1/2/3 over the pelvis in the synthetic body's rest pose (0.11, 0.24, 0.30 m of 0.51 m;
#: dancegen/synth/body.py), which follows SMPL's proportions.
SPINE_FRACTIONS = (0.22, 0.47, 0.59)

#: Estimated toe ("foot") joint = ankle + FOOT_FORWARD along the body's horizontal forward direction + FOOT_UP along
#: +Y, metres (the synthetic body's ankle -> foot rest offset, 0.13 m forward and 0.05 m down).
FOOT_FORWARD = 0.13
FOOT_UP = -0.05

#: BVH figures whose rest pose spans more than this many units are taken to be in centimetres (scaled by 0.01);
#: otherwise in metres. Pass `scale` to `read_bvh` for other units (inches: 0.0254).
BVH_CM_THRESHOLD = 10.0

#: BVH joint names per HumanML3D joint, in priority order; the first name present (and not already used by
#: another joint) wins. Names are compared after normalisation (`_norm_bvh_name`): case, a namespace such as
#: `mixamorig:` and separators are ignored, and Left/Right, `L_`/`R_`, `l_`/`r_` prefixes and `_L`/`.L`/`_l` suffixes
#: are equivalent, so "LeftUpLeg", "L_UpLeg" and "upleg.L" are one name. Right-side lists are the left ones
#: mirrored. Joints resolve in dict order: shoulders before collars (CMU/Mixamo "LeftShoulder" is the clavicle when
#: "LeftArm" exists, but SMPL's "L_Shoulder" is the shoulder next to "L_Collar") and ankles before feet (SMPL's
#: "L_Foot" is the toe, everyone else's "LeftFoot" the ankle). spine1/2/3 are not looked up by name: see `read_bvh`.
BVH_ALIASES: dict[str, tuple[str, ...]] = {
    "pelvis": ("Hips", "Pelvis", "Hip", "Root"),
    "neck": ("Neck", "Neck1", "Neck01"),
    "head": ("Head",),
    "l_hip": ("LeftUpLeg", "LeftHip", "LeftUpperLeg", "LeftThigh", "LHipJoint"),
    "l_knee": ("LeftKnee", "LeftLeg", "LeftLowerLeg", "LeftLowLeg", "LeftShin"),
    "l_ankle": ("LeftAnkle", "LeftFoot"),
    "l_foot": ("LeftToeBase", "LeftToe", "LeftToes", "LeftFoot"),
    "l_shoulder": ("LeftArm", "LeftUpperArm", "LeftUpArm", "LeftShoulder"),
    "l_collar": ("LeftCollar", "LeftClavicle", "LeftShoulder"),
    "l_elbow": ("LeftElbow", "LeftForeArm", "LeftLowerArm", "LeftLowArm"),
    "l_wrist": ("LeftWrist", "LeftHand"),
}
for _k, _v in list(BVH_ALIASES.items()):
    if _k.startswith("l_"):
        BVH_ALIASES["r_" + _k[2:]] = tuple("Right" + n[4:] if n.startswith("Left") else "R" + n[1:] for n in _v)
del _k, _v


@dataclass
class Motion:
    """A 3D motion on the HumanML3D-22 skeleton.

    Attributes:
        joints: `(T, 22, 3)` float32 joint positions in metres, Y-up, `HUMANML3D22` order.
        fps: Frames per second.
        format: Which reader produced it: "mdm", "humanml3d", "synth", "aist++" or "bvh".
        meta: Provenance: `path`, and per reader e.g. `text`/`sample` (MDM), `units`/`source_joints` (BVH),
            `estimated_joints` (joints not in the source, derived by the documented rules).
    """

    joints: np.ndarray
    fps: float
    format: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.joints = np.asarray(self.joints, dtype=np.float32)
        if self.joints.ndim != 3 or self.joints.shape[1:] != (HUMANML3D22.num_joints, 3):
            raise ValueError(f"Motion joints must have shape (T, 22, 3), got {self.joints.shape}")
        self.fps = float(self.fps)
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.joints.shape[0])

    def __len__(self) -> int:
        return self.num_frames


def is_motion_file(path: str | os.PathLike) -> bool:
    """True for an existing file whose suffix is one of `MOTION_SUFFIXES` (what the pose tools send to read_motion)."""
    p = Path(path)
    return p.suffix.lower() in MOTION_SUFFIXES and p.is_file()


# ---------------------------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------------------------

_KNOWN = "MDM results.npy, HumanML3D new_joints/*.npy, synth joints3d.npy, AIST++ keypoints3d/*.pkl or .bvh"


def read_motion(path: str | os.PathLike, fps: float | None = None, sample: int = 0) -> Motion:
    """Read a 3D motion file into HumanML3D-22 joints (metres, Y-up); the module docstring lists the rules.

    Args:
        path: MDM `results.npy`, HumanML3D `new_joints/*.npy`, synth `joints3d.npy`, AIST++ `keypoints3d/*.pkl`
            or a `.bvh` file.
        fps: Override the frame rate (default: 20 for MDM/HumanML3D, the sibling meta.json's for synth, 60 for
            AIST++, 1 / Frame Time for BVH).
        sample: Which MDM sample (index into the first axis of `motion`); ignored by single-motion files.

    Returns:
        The Motion; `meta["path"]` is the file.

    Raises:
        InputError: Missing file, unknown format, wrong shapes, NaN/inf, zero frames, coordinates beyond 1e4 m,
            a pickle naming a global other than numpy's array machinery.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such motion file", p)
    if p.is_dir():
        raise InputError(f"is a folder; expected a motion file ({_KNOWN})", p)
    if fps is not None and not (float(fps) > 0 and math.isfinite(float(fps))):
        raise InputError(f"fps must be positive, got {fps}", p)
    with open(p, "rb") as f:
        head = f.read(64)
    suffix = p.suffix.lower()
    if suffix == ".bvh" or head.lstrip().upper().startswith(b"HIERARCHY"):
        motion = read_bvh(p, fps=fps)
    elif head.startswith(b"\x93NUMPY"):
        motion = _from_object(_load_npy(p), p, fps, sample)
    elif suffix in (".pkl", ".pickle") or head[:1] == b"\x80":
        from dancegen.motion.safe_pickle import safe_unpickle

        with open(p, "rb") as f:
            obj = safe_unpickle(f, path=p)
        motion = _from_object(obj, p, fps, sample)
    elif suffix == ".npy":
        raise InputError("not a .npy file (no NUMPY magic)", p)
    else:
        raise InputError(f"unknown motion format; expected {_KNOWN}", p)
    motion.meta.setdefault("path", str(p))
    return motion


def _load_npy(path: Path):
    """A .npy file's array; object payloads go through the restricted unpickler (header parsed by numpy.lib.format)."""
    from numpy.lib import format as npformat

    with open(path, "rb") as f:
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:  # (3, 0): utf-8 header; numpy has no public reader for it
                shape, fortran, dtype = npformat._read_array_header(f, version)
        except (ValueError, OSError, SyntaxError) as e:
            raise InputError(
                f"bad .npy header ({str(e).splitlines()[0] if str(e) else type(e).__name__})", path
            ) from None
        if dtype.hasobject:
            from dancegen.motion.safe_pickle import safe_unpickle

            return safe_unpickle(f, path=path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read .npy data ({str(e).splitlines()[0]})", path) from None


def _from_object(obj, path: Path, fps: float | None, sample: int) -> Motion:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, dict):
        if "motion" in obj:
            return _mdm(obj, path, fps, sample)
        if "keypoints3d_optim" in obj or "keypoints3d" in obj:
            return _aist(obj, path, fps)
        keys = ", ".join(sorted(map(str, obj)))
        hint = " (an AIST++ SMPL motion; use its keypoints3d/*.pkl)" if "smpl_poses" in obj else ""
        raise InputError(
            f"a dict with keys [{keys}]{hint}; expected MDM results (motion, text, lengths) or AIST++ keypoints3d",
            path,
        )
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return _joints_file(obj, path, fps)
    raise InputError(f"holds a {type(obj).__name__}; expected {_KNOWN}", path)


def _numeric(a, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception:  # ragged lists and the like
        arr = None
    if arr is None or arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what} is not a numeric array", path)
    return arr.astype(np.float64)


def _check(joints: np.ndarray, path: Path, names: tuple[str, ...], what: str = "joints") -> None:
    """Zero frames, NaN/inf and coordinates beyond MAX_ABS_METRES are errors (joints already in metres)."""
    if joints.shape[0] == 0:
        raise InputError(f"{what} have zero frames", path)
    bad = ~np.isfinite(joints).all(-1)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise InputError(
            f"{what} contain NaN or inf values ({int(bad.sum())} joints; first: frame {t}, joint {names[j]})", path
        )
    m = float(np.abs(joints).max())
    if m > MAX_ABS_METRES:
        raise InputError(f"{what} reach {m:.3g} m from the origin, beyond {MAX_ABS_METRES:.0e} m (wrong units?)", path)


def _joints_file(arr: np.ndarray, path: Path, fps: float | None) -> Motion:
    """HumanML3D new_joints / synth joints3d: `(T, 22, 3)` metres. fps: argument > sibling meta.json > 20."""
    if arr.ndim != 3 or arr.shape[1:] != (22, 3):
        hint = ""
        if arr.ndim == 2 and arr.shape[1] == 263:
            hint = " (these are HumanML3D new_joint_vecs features; use new_joints/*.npy)"
        elif arr.ndim == 3 and arr.shape[1:] == (18, 3):
            hint = " (2D COCO-18 keypoints, not a 3D motion)"
        raise InputError(f"joints array has shape {arr.shape}; expected (T, 22, 3){hint}", path)
    joints = _numeric(arr, "joints array", path)
    _check(joints, path, HUMANML3D22.joints)
    meta_fps = _sibling_fps(path)
    fmt = "synth" if meta_fps is not None else "humanml3d"
    rate = fps if fps is not None else (meta_fps if meta_fps is not None else HUMANML3D_FPS)
    return Motion(
        joints,
        rate,
        fmt,
        {"fps_source": "argument" if fps is not None else ("meta.json" if meta_fps is not None else "default")},
    )


def _sibling_fps(path: Path) -> float | None:
    meta = path.parent / "meta.json"
    if not meta.is_file():
        return None
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get("fps")
        value = float(value)
    except (ValueError, OSError, AttributeError, TypeError, UnicodeDecodeError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _plain(v):
    """numpy scalars -> Python numbers (meta stays JSON-friendly)."""
    return v.item() if isinstance(v, np.generic) else v


def _mdm(d: dict, path: Path, fps: float | None, sample: int) -> Motion:
    m = np.asarray(d["motion"]) if not isinstance(d["motion"], np.ndarray) else d["motion"]
    if m.ndim != 4 or m.shape[1:3] != (22, 3):
        raise InputError(
            f"MDM 'motion' has shape {m.shape}; expected (N, 22, 3, T) (HumanML3D joints, text mode)", path
        )
    n, t = m.shape[0], m.shape[3]
    if not 0 <= int(sample) < n:
        raise InputError(f"sample {sample} out of range: the file has {n} samples (0..{n - 1})", path)
    sample = int(sample)
    joints = _numeric(m[sample], "MDM 'motion'", path).transpose(2, 0, 1)
    meta: dict = {"sample": sample}
    if d.get("lengths") is not None:
        lengths = _numeric(d["lengths"], "MDM 'lengths'", path).reshape(-1)
        if lengths.shape[0] <= sample:
            raise InputError(f"MDM 'lengths' has {lengths.shape[0]} entries, no entry for sample {sample}", path)
        length = int(lengths[sample])
        if not 1 <= length <= t:
            raise InputError(f"MDM lengths[{sample}] = {length} is outside 1..{t} (the motion's frame count)", path)
        joints = joints[:length]
    _check(joints, path, HUMANML3D22.joints, "MDM joints")
    text = d.get("text")
    if isinstance(text, (list, tuple, np.ndarray)) and len(text) > sample:
        meta["text"] = str(text[sample])
    for key in ("num_samples", "num_repetitions"):
        if key in d:
            meta[key] = _plain(d[key])
    ns = meta.get("num_samples")
    if isinstance(ns, int) and ns > 0:
        meta["repetition"], meta["sample_in_repetition"] = divmod(sample, ns)
    return Motion(joints, fps if fps is not None else HUMANML3D_FPS, "mdm", meta)


def _aist(d: dict, path: Path, fps: float | None) -> Motion:
    key = "keypoints3d_optim" if d.get("keypoints3d_optim") is not None else "keypoints3d"
    k = d[key]
    shape = getattr(k, "shape", None)
    if shape is None or len(shape) != 3 or tuple(shape[1:]) != (17, 3):
        raise InputError(f"AIST++ {key!r} has shape {shape}; expected (T, 17, 3) (COCO-17, cm)", path)
    k = _numeric(k, f"AIST++ {key!r}", path) * 0.01  # cm -> m
    _check(k, path, COCO17.joints, f"AIST++ {key!r}")
    joints, estimated = coco17_to_humanml3d22(k, return_estimated=True)
    _check(joints, path, HUMANML3D22.joints)
    meta = {"source_key": key, "units": "cm", "estimated_joints": estimated}
    return Motion(joints, fps if fps is not None else AIST_FPS, "aist++", meta)


# ---------------------------------------------------------------------------------------------------------------
# COCO-17 -> HumanML3D-22
# ---------------------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _estimate_feet(j: np.ndarray) -> None:
    """Fill l_foot / r_foot in place: ankle + FOOT_FORWARD along the hips' horizontal forward + FOOT_UP along Y."""
    hi = HUMANML3D22.index
    left = j[:, hi("l_hip")] - j[:, hi("r_hip")]
    fwd = np.cross(left, np.array([0.0, 1.0, 0.0]))  # person's left x up = forward (+Z for a body facing +Z)
    fwd[:, 1] = 0.0
    fwd = _unit(fwd)
    for side in ("l", "r"):
        j[:, hi(f"{side}_foot")] = j[:, hi(f"{side}_ankle")] + FOOT_FORWARD * fwd
        j[:, hi(f"{side}_foot"), 1] += FOOT_UP


def coco17_to_humanml3d22(keypoints3d: np.ndarray, return_estimated: bool = False):
    """Map COCO-17 3D keypoints (AIST++ order, metres, Y-up) onto the HumanML3D-22 skeleton.

    Direct (same point): hips, knees, ankles, shoulders, elbows, wrists. Estimated:

    * pelvis = midpoint of the hips;
    * neck = midpoint of the shoulders (COCO-18's neck convention);
    * spine1/2/3 = pelvis + f (neck - pelvis), f = `SPINE_FRACTIONS`;
    * head = midpoint of the ears (SMPL's head joint sits inside the skull at about ear height);
    * l/r_collar = midpoint of the neck and that side's shoulder;
    * l/r_foot (toes) = ankle + `FOOT_FORWARD` m along the hips' horizontal forward direction (person's left x up)
      + `FOOT_UP` m vertically (COCO-17 has no toes; toe-out is not modelled).

    The nose and eyes are not used.

    Args:
        keypoints3d: `(T, 17, 3)` positions in metres.
        return_estimated: Also return the names of the estimated joints.

    Returns:
        `(T, 22, 3)` float64 joints, and with `return_estimated` the list of estimated joint names.
    """
    k = np.asarray(keypoints3d, np.float64)
    if k.ndim != 3 or k.shape[1:] != (17, 3):
        raise ValueError(f"COCO-17 keypoints must have shape (T, 17, 3), got {k.shape}")
    ci, hi = COCO17.index, HUMANML3D22.index
    j = np.zeros((k.shape[0], 22, 3))
    direct = (
        "l_hip",
        "r_hip",
        "l_knee",
        "r_knee",
        "l_ankle",
        "r_ankle",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
    )
    for name in direct:
        j[:, hi(name)] = k[:, ci(name)]
    pelvis = (k[:, ci("l_hip")] + k[:, ci("r_hip")]) / 2
    neck = (k[:, ci("l_shoulder")] + k[:, ci("r_shoulder")]) / 2
    j[:, hi("pelvis")] = pelvis
    j[:, hi("neck")] = neck
    for name, f in zip(("spine1", "spine2", "spine3"), SPINE_FRACTIONS, strict=True):
        j[:, hi(name)] = pelvis + f * (neck - pelvis)
    j[:, hi("head")] = (k[:, ci("l_ear")] + k[:, ci("r_ear")]) / 2
    for side in ("l", "r"):
        j[:, hi(f"{side}_collar")] = (neck + k[:, ci(f"{side}_shoulder")]) / 2
    _estimate_feet(j)
    estimated = [n for n in HUMANML3D22.joints if n not in direct]
    return (j, estimated) if return_estimated else j


# ---------------------------------------------------------------------------------------------------------------
# BVH
# ---------------------------------------------------------------------------------------------------------------

_CHANNELS = {f"{a}{kind}" for a in "xyz" for kind in ("position", "rotation")}


@dataclass
class _BvhNode:
    name: str
    parent: int
    offset: np.ndarray
    channels: tuple[str, ...] = ()
    end_site: bool = False


def _parse_bvh(text: str, path: Path) -> tuple[list[_BvhNode], np.ndarray, float]:
    """HIERARCHY and MOTION sections -> nodes (depth-first, parents first), `(F, C)` channel values, frame time."""
    tokens = text.split()
    nodes: list[_BvhNode] = []
    stack: list[int] = []
    i = 0

    def need(n: int, what: str):
        if i + n > len(tokens):
            raise InputError(f"BVH ends inside the {what}", path)

    need(1, "header")
    if tokens[0].upper() != "HIERARCHY":
        raise InputError(f"BVH must start with HIERARCHY, found {tokens[0][:20]!r}", path)
    i = 1
    while True:
        need(1, "HIERARCHY section")
        tok = tokens[i]
        up = tok.upper()
        if up == "MOTION":
            break
        if up in ("ROOT", "JOINT"):
            if up == "ROOT" and (stack or nodes):
                raise InputError("BVH has several ROOT skeletons; only one is supported", path)
            if up == "JOINT" and not stack:
                raise InputError("BVH JOINT outside a ROOT block", path)
            j = i + 1
            while j < len(tokens) and tokens[j] != "{":
                j += 1
            need(j - i + 1, f"{tok} declaration")
            name = " ".join(tokens[i + 1 : j])
            if not name:
                raise InputError(f"BVH {tok} without a name", path)
            nodes.append(_BvhNode(name, stack[-1] if stack else -1, np.zeros(3)))
            stack.append(len(nodes) - 1)
            i = j + 1
        elif up == "END":
            need(3, "End Site")
            if not stack or tokens[i + 1].upper() != "SITE" or tokens[i + 2] != "{":
                raise InputError("malformed 'End Site' block in BVH", path)
            nodes.append(_BvhNode(f"{nodes[stack[-1]].name}/End Site", stack[-1], np.zeros(3), end_site=True))
            stack.append(len(nodes) - 1)
            i += 3
        elif up == "OFFSET":
            need(4, "OFFSET")
            if not stack:
                raise InputError("BVH OFFSET outside a joint", path)
            try:
                nodes[stack[-1]].offset = np.array([float(v) for v in tokens[i + 1 : i + 4]])
            except ValueError:
                raise InputError(f"BVH OFFSET of {nodes[stack[-1]].name!r} is not three numbers", path) from None
            i += 4
        elif up == "CHANNELS":
            need(2, "CHANNELS")
            if not stack or nodes[stack[-1]].end_site:
                raise InputError("BVH CHANNELS outside a joint", path)
            try:
                n = int(tokens[i + 1])
            except ValueError:
                raise InputError(f"BVH CHANNELS count {tokens[i + 1]!r} is not an integer", path) from None
            need(2 + n, "CHANNELS")
            chans = tuple(c.lower() for c in tokens[i + 2 : i + 2 + n])
            unknown = [c for c in chans if c not in _CHANNELS]
            if unknown or n < 0:
                raise InputError(
                    f"BVH joint {nodes[stack[-1]].name!r} has unknown channels {unknown}; expected "
                    "X/Y/Z position or rotation",
                    path,
                )
            nodes[stack[-1]].channels = chans
            i += 2 + n
        elif tok == "}":
            if not stack:
                raise InputError("unbalanced '}' in BVH HIERARCHY", path)
            stack.pop()
            i += 1
        else:
            raise InputError(f"unexpected token {tok[:30]!r} in BVH HIERARCHY", path)
    if stack:
        raise InputError("BVH HIERARCHY has an unclosed '{' before MOTION", path)
    if not nodes:
        raise InputError("BVH HIERARCHY has no ROOT joint", path)
    # MOTION / Frames: N / Frame Time: t / values
    need(6, "MOTION header")
    if tokens[i + 1].lower() != "frames:" or tokens[i + 3].lower() != "frame" or tokens[i + 4].lower() != "time:":
        raise InputError("BVH MOTION must be followed by 'Frames: N' and 'Frame Time: t'", path)
    try:
        num_frames = int(tokens[i + 2])
        frame_time = float(tokens[i + 5])
    except ValueError:
        raise InputError("BVH 'Frames:' or 'Frame Time:' is not a number", path) from None
    num_channels = sum(len(n.channels) for n in nodes)
    try:
        values = np.array(tokens[i + 6 :], dtype=np.float64)
    except ValueError:
        raise InputError("BVH MOTION data holds a value that is not a number", path) from None
    if num_frames <= 0:
        raise InputError(f"BVH has zero frames (Frames: {num_frames})", path)
    if values.size != num_frames * num_channels:
        raise InputError(
            f"BVH MOTION data has {values.size} values; Frames: {num_frames} x {num_channels} channels "
            f"needs {num_frames * num_channels}",
            path,
        )
    return nodes, values.reshape(num_frames, num_channels), frame_time


def _axis_rotation(axis: int, degrees: np.ndarray) -> np.ndarray:
    """`(F,)` angles about x/y/z (0/1/2) -> `(F, 3, 3)` right-handed rotation matrices."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros((a.shape[0], 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[:, axis, axis] = 1.0
    r[:, i, i] = c
    r[:, j, j] = c
    r[:, i, j] = -s
    r[:, j, i] = s
    return r


def bvh_forward_kinematics(nodes: list[_BvhNode], frames: np.ndarray) -> np.ndarray:
    """World positions of every node (joints and End Sites), `(F, N, 3)`, in the file's units.

    A joint's local transform is its translation (the position channels where present, the OFFSET for axes without
    one, as Blender's importer reads them) and a rotation composed in channel order: channels
    "Zrotation Xrotation Yrotation" give `R = Rz @ Rx @ Ry` (angles in degrees). World: `p_j = p_parent +
    G_parent @ t_j`, `G_j = G_parent @ R_j`.
    """
    f = frames.shape[0]
    n = len(nodes)
    pos = np.zeros((f, n, 3))
    glob = np.zeros((f, n, 3, 3))
    col = 0
    for j, node in enumerate(nodes):
        t = np.repeat(node.offset[None], f, axis=0)
        rot = np.broadcast_to(np.eye(3), (f, 3, 3)).copy()
        for ch in node.channels:
            axis = "xyz".index(ch[0])
            if ch.endswith("position"):
                t[:, axis] = frames[:, col]
            else:
                rot = rot @ _axis_rotation(axis, frames[:, col])
            col += 1
        if node.parent < 0:
            pos[:, j], glob[:, j] = t, rot
        else:
            p = node.parent
            pos[:, j] = pos[:, p] + np.einsum("fab,fb->fa", glob[:, p], t)
            glob[:, j] = glob[:, p] @ rot
    return pos


def _norm_bvh_name(name: str) -> str:
    """Normalised joint name: namespace/case/separators dropped, the side as a leading 'l'/'r' (see BVH_ALIASES)."""
    s = name.split(":")[-1].strip().lower()
    if s.startswith("mixamorig"):
        s = s[len("mixamorig") :]
    s = s.strip("_-. ")
    side = ""
    m = re.match(r"^(left|right)[\s_.\-]*(.+)$", s) or re.match(r"^([lr])[\s_.\-]+(.+)$", s)
    if m:
        side, s = m.group(1)[0], m.group(2)
    else:
        m = re.match(r"^(.+?)[\s_.\-]+(left|right|l|r)$", s)
        if m:
            side, s = m.group(2)[0], m.group(1)
    return side + re.sub(r"[^a-z0-9]", "", s)


def _polyline_points(chain: np.ndarray, fractions) -> np.ndarray:
    """Points at arc-length `fractions` along per-frame polylines `(F, K, 3)` -> `(F, len(fractions), 3)`."""
    seg = np.linalg.norm(np.diff(chain, axis=1), axis=-1)  # (F, K-1)
    cum = np.concatenate([np.zeros((chain.shape[0], 1)), np.cumsum(seg, axis=1)], axis=1)
    total = np.maximum(cum[:, -1:], 1e-12)
    out = []
    for fr in fractions:
        target = fr * total  # (F, 1)
        k = np.clip((cum[:, 1:] < target).sum(1), 0, chain.shape[1] - 2)  # segment index per frame
        rows = np.arange(chain.shape[0])
        a, b = chain[rows, k], chain[rows, k + 1]
        w = ((target[:, 0] - cum[rows, k]) / np.maximum(seg[rows, k], 1e-12)).clip(0, 1)
        out.append(a + w[:, None] * (b - a))
    return np.stack(out, axis=1)


def read_bvh(path: str | os.PathLike, fps: float | None = None, scale: float | None = None) -> Motion:
    """Read a BVH file: forward kinematics, then the HumanML3D-22 joints by name.

    Joints are found with `BVH_ALIASES` (ROOT as the pelvis when no alias matches; a toe missing from every alias
    falls back to the ankle's End Site when it has one). spine1/2/3 come from the chain of joints strictly between
    the pelvis and the neck: exactly three map one to one (Mixamo Spine/Spine1/Spine2, CMU LowerBack/Spine/Spine1,
    SMPL Spine1/2/3); any other number is resampled at `SPINE_FRACTIONS` of the chain's length (and the spine joints
    are listed in `meta["estimated_joints"]`).

    Units: the rest pose (OFFSETs only) spanning more than `BVH_CM_THRESHOLD` units is taken as centimetres (x 0.01),
    otherwise metres; `scale` overrides the guess. Axes are kept as they are (BVH is Y-up by convention).

    Args:
        path: The .bvh file.
        fps: Override 1 / Frame Time.
        scale: Metres per file unit (default: the guess above).

    Returns:
        Motion with format "bvh"; meta has `units`, `scale`, `source_joints` (HumanML3D name -> BVH name) and
        `estimated_joints`.

    Raises:
        InputError: Malformed HIERARCHY/MOTION, a joint with no alias match (named), NaN, zero frames.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such BVH file", path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    nodes, frames, frame_time = _parse_bvh(text, path)
    if fps is None:
        if not (frame_time > 0 and math.isfinite(frame_time)):
            raise InputError(f"BVH Frame Time must be positive, got {frame_time}", path)
        fps = 1.0 / frame_time
    if not np.isfinite(frames).all():
        raise InputError("BVH MOTION data contains NaN or inf values", path)

    # units from the rest pose
    rest = bvh_forward_kinematics(nodes, np.zeros((1, frames.shape[1])) if frames.shape[1] else np.zeros((1, 0)))
    # a ROOT position channel is set to 0 above; the OFFSETs alone give the figure's size
    extent = float(np.ptp(rest[0], axis=0).max()) if len(nodes) > 1 else 0.0
    if scale is None:
        units, scale = ("cm", 0.01) if extent > BVH_CM_THRESHOLD else ("m", 1.0)
    else:
        units, scale = "given", float(scale)

    by_norm: dict[str, int] = {}
    for idx, node in enumerate(nodes):
        if not node.end_site:
            by_norm.setdefault(_norm_bvh_name(node.name), idx)
    used: set[int] = set()
    found: dict[str, int] = {}
    estimated: list[str] = []
    for target, aliases in BVH_ALIASES.items():
        for alias in aliases:
            idx = by_norm.get(_norm_bvh_name(alias))
            if idx is not None and idx not in used:
                found[target] = idx
                used.add(idx)
                break
    if "pelvis" not in found and 0 not in used:
        found["pelvis"] = 0
        used.add(0)
    for side in ("l", "r"):
        ankle = found.get(f"{side}_ankle")
        if f"{side}_foot" not in found and ankle is not None:
            ends = [k for k, nd in enumerate(nodes) if nd.end_site and nd.parent == ankle]
            if ends:
                found[f"{side}_foot"] = ends[0]
    required = [n for n in HUMANML3D22.joints if not n.startswith("spine")]
    missing = [n for n in required if n not in found]
    if missing:
        names = [nd.name for nd in nodes if not nd.end_site]
        listed = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        first = missing[0]
        raise InputError(
            f"BVH has no joint for {', '.join(missing)} (for {first} looked for "
            f"{', '.join(BVH_ALIASES[first])}); its joints: {listed}",
            path,
        )

    # spine: joints strictly between pelvis and neck
    chain = []
    k = nodes[found["neck"]].parent
    while k >= 0 and k != found["pelvis"]:
        chain.append(k)
        k = nodes[k].parent
    if k != found["pelvis"]:
        raise InputError(
            f"BVH neck {nodes[found['neck']].name!r} is not below the pelvis {nodes[found['pelvis']].name!r}", path
        )
    chain.reverse()

    world = bvh_forward_kinematics(nodes, frames) * scale
    joints = np.zeros((frames.shape[0], 22, 3))
    for name, idx in found.items():
        joints[:, HUMANML3D22.index(name)] = world[:, idx]
    spine_idx = [HUMANML3D22.index(n) for n in ("spine1", "spine2", "spine3")]
    if len(chain) == 3:
        for hj, idx in zip(spine_idx, chain, strict=True):
            joints[:, hj] = world[:, idx]
            found[HUMANML3D22.joints[hj]] = idx
    else:
        poly = world[:, [found["pelvis"], *chain, found["neck"]]]
        joints[:, spine_idx] = _polyline_points(poly, SPINE_FRACTIONS)
        estimated += ["spine1", "spine2", "spine3"]
    _check(joints, path, HUMANML3D22.joints)
    meta = {
        "units": units,
        "scale": scale,
        "rest_extent": extent,
        "source_joints": {
            name: nodes[idx].name for name, idx in sorted(found.items(), key=lambda kv: HUMANML3D22.index(kv[0]))
        },
        "estimated_joints": estimated,
    }
    return Motion(joints, fps, "bvh", meta)


# ---------------------------------------------------------------------------------------------------------------
# 3D -> 2D
# ---------------------------------------------------------------------------------------------------------------


def project_motion(motion: Motion, width: int = 512, height: int = 512, fov_deg: float = 60.0, margin: float = 0.1):
    """Project a motion to COCO-18 keypoints through one fixed camera in front of the body.

    The camera sits on the +Z side looking along -Z (at the front of a body facing +Z), Y up, and is framed on the
    bounding box of the whole sequence (`dancegen.pose.convert.fit_camera`), so it never moves and the body stays in
    frame. Joints and the synthesised face points come from `dancegen.pose.convert.humanml3d_to_coco18` (neck =
    shoulder midpoint; nose/eyes/ears from head, neck and shoulders, hidden when turned away from the camera).

    Args:
        motion: The motion (HumanML3D-22, metres, Y-up).
        width, height: Image size in pixels.
        fov_deg: Vertical field of view in degrees.
        margin: Fraction of the image kept free on each side, in [0, 0.5).

    Returns:
        `dancegen.pose.sequence.PoseSequence` in format "coco18" at the motion's fps; `meta["motion"]` records the
        source format and metadata, `meta["camera"]` the camera.

    Raises:
        InputError: Non-positive size, a field of view outside (0, 180) or a margin outside [0, 0.5).
    """
    from dancegen.pose.convert import fit_camera, humanml3d_to_coco18

    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"projection size must be positive, got {width}x{height}")
    if not 0 < fov_deg < 180:
        raise InputError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if not 0 <= margin < 0.5:
        raise InputError(f"margin must be in [0, 0.5), got {margin}")
    width, height = int(width), int(height)
    camera = fit_camera(motion.joints, width, height, up_axis=1, azimuth_deg=0.0, fov_deg=fov_deg, margin=margin)
    seq = humanml3d_to_coco18(motion.joints, camera, width, height, fps=motion.fps)
    seq.meta.update(
        source=str(motion.meta.get("path", "motion")),
        motion={"format": motion.format, "fps": motion.fps, "num_frames": motion.num_frames, **motion.meta},
        camera={"center": camera.center.tolist(), "fov_deg": float(fov_deg), "look": [0.0, 0.0, -1.0]},
    )
    return seq


__all__ = [
    "AIST_FPS",
    "BVH_ALIASES",
    "HUMANML3D_FPS",
    "MOTION_SUFFIXES",
    "Motion",
    "bvh_forward_kinematics",
    "coco17_to_humanml3d22",
    "is_motion_file",
    "project_motion",
    "read_bvh",
    "read_motion",
]
