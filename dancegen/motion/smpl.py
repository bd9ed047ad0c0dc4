"""The optional SMPL mesh body (LatentMan spec §6 "body/" item 1): fit to the 22 joints, rendered as a triangle mesh.

SMPL (Loper et al. 2015) is licensed: dancegen ships no SMPL file and never downloads one. With a model file the user
has (`SMPL_NEUTRAL.npz`, as smplx distributes it; a `.pkl` is a pickle, read only when the user names it, through the
restricted unpickler, with a warning), `render.body: smpl` replaces the capsule body:

1. `SMPLModel.forward`: the SMPL formulation (shape blend with zero betas, i.e. the template's body, pose blend
   shapes, joints regressed from the shaped template, linear blend skinning along the 24-joint kinematic tree), in
   torch, written here rather than taken from the `smplx` package (unmaintained; it would add a dependency for
   thirty lines).
2. `fit_smpl`: the first 22 SMPL joints are HumanML3D's 22 joints (the same order; MDM's outputs are SMPL joints),
   so the pose is fitted to them: per-frame global orientation, the 21 body joint rotations (axis-angle) and the
   translation, Adam on the mean squared joint error plus a small L2 prior on the rotations (as MDM's SMPLify fit,
   without its GMM prior, which is another licensed file). The two hand joints stay at rest.
3. `vertex_codes`: DensePose-like codes fixed per vertex, so a body point keeps its code in every frame: the part is
   the joint with the largest skinning weight mapped to DensePose's 24 labels (spec: "argmax of SMPL skinning
   weights"); a two-label part is split by the sign of the vertex's rest-pose offset from the bone along the body's
   forward axis (front / back); v runs along the part's bone in the rest pose and u around it (the angle, per half),
   a per-part cylindrical parameterisation of the rest template.
4. `render_mesh`: a z-buffered triangle rasteriser (numpy, pixel centres, perspective-correct interpolation of 1/z
   and of the codes) with the capsule renderer's camera and its `BodyRender` output, so depth control images and
   correspondences work unchanged.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.motion.body import (
    HEAD,
    L_FOOT,
    L_HAND,
    L_LOWER_ARM,
    L_LOWER_LEG,
    L_UPPER_ARM,
    L_UPPER_LEG,
    R_FOOT,
    R_HAND,
    R_LOWER_ARM,
    R_LOWER_LEG,
    R_UPPER_ARM,
    R_UPPER_LEG,
    TORSO,
)

#: SMPL's kinematic tree (parent of each of the 24 joints).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
NUM_JOINTS = 24
REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f")
#: SMPL joint whose bone a vertex follows -> DensePose labels (one, or two split front / back).
JOINT_PARTS: dict[int, tuple[int, ...]] = {
    0: TORSO, 3: TORSO, 6: TORSO, 9: TORSO, 13: TORSO, 14: TORSO,
    1: L_UPPER_LEG, 2: R_UPPER_LEG, 4: L_LOWER_LEG, 5: R_LOWER_LEG,
    7: (L_FOOT,), 10: (L_FOOT,), 8: (R_FOOT,), 11: (R_FOOT,),
    12: HEAD, 15: HEAD,
    16: L_UPPER_ARM, 17: R_UPPER_ARM, 18: L_LOWER_ARM, 19: R_LOWER_ARM,
    20: (L_HAND,), 22: (L_HAND,), 21: (R_HAND,), 23: (R_HAND,),
}
#: The bone each DensePose part is parameterised along (SMPL joint -> joint), one axis per part so that no two
#: vertices of a part share a code: the torso pelvis -> neck, the head neck -> head, the limbs their own bone.
PART_AXES: dict[tuple[int, ...], tuple[int, int]] = {
    TORSO: (0, 12), HEAD: (12, 15), L_UPPER_LEG: (1, 4), R_UPPER_LEG: (2, 5), L_LOWER_LEG: (4, 7),
    R_LOWER_LEG: (5, 8), (L_FOOT,): (7, 10), (R_FOOT,): (8, 11), L_UPPER_ARM: (16, 18), R_UPPER_ARM: (17, 19),
    L_LOWER_ARM: (18, 20), R_LOWER_ARM: (19, 21), (L_HAND,): (20, 22), (R_HAND,): (21, 23),
}
SMPL_HINT = ("SMPL files are licensed and not shipped: register at https://smpl.is.tue.mpg.de, download the model and "
             "pass SMPL_NEUTRAL.npz (smplx's tools/clean_ch.py turns the chumpy .pkl into plain arrays)")


@dataclass
class SMPLModel:
    """The arrays of an SMPL model file (zero betas: ``v_template`` is the body)."""

    v_template: np.ndarray  # (V, 3)
    posedirs: np.ndarray  # (V, 3, 207)
    J_regressor: np.ndarray  # (24, V)
    weights: np.ndarray  # (V, 24)
    faces: np.ndarray  # (F, 3) int
    path: str = ""

    @property
    def rest_joints(self) -> np.ndarray:
        """``(24, 3)`` joints of the rest template."""
        return self.J_regressor @ self.v_template

    def forward(self, pose, transl):
        """``pose`` ``(T, 24, 3)`` axis-angle and ``transl`` ``(T, 3)`` (torch) -> vertices ``(T, V, 3)``, joints
        ``(T, 24, 3)``: SMPL's linear blend skinning (module docstring)."""
        import torch

        dt = pose.dtype
        v = torch.as_tensor(self.v_template, dtype=dt)
        j_rest = torch.as_tensor(self.rest_joints, dtype=dt)
        rot = rodrigues(pose)  # (T, 24, 3, 3)
        eye = torch.eye(3, dtype=dt)
        feat = (rot[:, 1:] - eye).reshape(len(pose), -1)  # (T, 207)
        v_posed = v[None] + torch.einsum("vcp,tp->tvc", torch.as_tensor(self.posedirs, dtype=dt), feat)
        chain = []
        for i, parent in enumerate(SMPL_PARENTS):
            local = torch.zeros(len(pose), 4, 4, dtype=dt)
            local[:, :3, :3] = rot[:, i]
            local[:, :3, 3] = j_rest[i] - (j_rest[parent] if parent >= 0 else 0.0)
            local[:, 3, 3] = 1.0
            chain.append(local if parent < 0 else chain[parent] @ local)
        world = torch.stack(chain, 1)  # (T, 24, 4, 4)
        joints = world[:, :, :3, 3]
        skin = world.clone()
        skin[:, :, :3, 3] = joints - torch.einsum("tjab,jb->tja", world[:, :, :3, :3], j_rest)
        blend = torch.einsum("vj,tjab->tvab", torch.as_tensor(self.weights, dtype=dt), skin)
        verts = torch.einsum("tvab,tvb->tva", blend[..., :3, :3], v_posed) + blend[..., :3, 3]
        return verts + transl[:, None], joints + transl[:, None]


def rodrigues(aa):
    """Axis-angle ``(..., 3)`` -> rotation matrices ``(..., 3, 3)`` (torch; smooth at zero)."""
    import torch

    angle = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-16)
    axis = aa / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=aa.dtype).expand(k.shape)
    return eye + s * k + (1 - c) * (k @ k)


def load_smpl(path: str | os.PathLike, say=lambda m: None) -> SMPLModel:
    """Read an SMPL model file (``.npz``, or a ``.pkl`` through the restricted unpickler, said in one line).

    Raises:
        InputError: missing file, a pickle the restricted unpickler refuses (chumpy objects), missing arrays or wrong
            shapes; each names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"SMPL model file not found; {SMPL_HINT}", p)
    if p.suffix.lower() == ".npz":
        import zipfile

        try:
            with np.load(p, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise InputError("not an .npz archive (a single array)", p)
                data = {k: z[k] for k in z.files}
        except ValueError as e:
            if "allow_pickle" in str(e) or "object" in str(e).lower():  # object arrays need pickle: refused
                raise InputError(f"the .npz holds pickled objects; {SMPL_HINT}", p) from None
            raise InputError(f"not a readable .npz ({str(e).splitlines()[0][:120]})", p) from None
        except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise InputError(f"not a readable .npz ({e.__class__.__name__})", p) from None
    elif p.suffix.lower() in (".pkl", ".pickle"):
        from dancegen.motion.safe_pickle import safe_unpickle

        say(f"{p.name} is a pickle: reading it because you named it, with the restricted unpickler (arrays, dicts, "
            "numbers and strings only); an .npz is safer")
        with open(p, "rb") as f:
            data = safe_unpickle(f, path=p)
        if not isinstance(data, dict):
            raise InputError(f"an SMPL pickle holds a dict of arrays, this one a {type(data).__name__}", p)
    else:
        raise InputError("an SMPL model is an .npz (or a .pkl); got another kind of file", p)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"not an SMPL model file: no {', '.join(missing)}", p)
    try:
        v = np.asarray(data["v_template"], np.float64)
        n = len(v)
        model = SMPLModel(v, np.asarray(data["posedirs"], np.float64).reshape(n, 3, -1),
                          np.asarray(data["J_regressor"], np.float64), np.asarray(data["weights"], np.float64),
                          np.asarray(data["f"], np.int64).reshape(-1, 3), str(p))
    except (TypeError, ValueError) as e:
        raise InputError(f"SMPL arrays of the wrong kind ({e})", p) from None
    if not model.faces.size or not n:
        raise InputError("an SMPL model without vertices or faces", p)
    if (v.ndim != 2 or v.shape[1] != 3 or model.posedirs.shape[2] != 9 * (NUM_JOINTS - 1)
            or model.J_regressor.shape != (NUM_JOINTS, n) or model.weights.shape != (n, NUM_JOINTS)
            or model.faces.min() < 0 or model.faces.max() >= n):
        raise InputError(f"SMPL arrays of unexpected shapes (v_template {v.shape}, posedirs {model.posedirs.shape}, "
                         f"J_regressor {model.J_regressor.shape}, weights {model.weights.shape}, f up to "
                         f"{model.faces.max()}): SMPL has 24 joints", p)
    return model


def fit_smpl(model: SMPLModel, joints, iters: int = 150, lr: float = 0.05, prior: float = 1e-4):
    """Fit the pose to ``(T, 22, 3)`` HumanML3D joints; ``(vertices (T, V, 3), fitted joints (T, 24, 3), mean joint
    error in metres)`` as numpy. Deterministic: the rotations start at rest and the translation on the pelvis."""
    import torch

    j = torch.as_tensor(np.asarray(joints, np.float64))
    if j.ndim != 3 or j.shape[1:] != (22, 3):
        raise InputError(f"SMPL fitting needs (T, 22, 3) joints, got {tuple(j.shape)}")
    t = len(j)
    body = torch.zeros(t, 21, 3, dtype=torch.float64, requires_grad=True)
    root = torch.zeros(t, 3, dtype=torch.float64, requires_grad=True)
    transl = (j[:, 0] - torch.as_tensor(model.rest_joints[0])).clone().requires_grad_(True)
    opt = torch.optim.Adam([body, root, transl], lr=lr)
    hands = torch.zeros(t, 2, 3, dtype=torch.float64)
    for _ in range(iters):
        opt.zero_grad()
        pose = torch.cat([root[:, None], body, hands], 1)
        _, fitted = model.forward(pose, transl)
        loss = ((fitted[:, :22] - j) ** 2).sum(-1).mean() + prior * (body ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        verts, fitted = model.forward(torch.cat([root[:, None], body, hands], 1), transl)
        err = (fitted[:, :22] - j).norm(dim=-1).mean().item()
    return verts.numpy(), fitted.numpy(), err


def vertex_codes(model: SMPLModel) -> np.ndarray:
    """``(V, 3)`` (label, u, v) per vertex, fixed on the rest template (module docstring, item 3): vertices are grouped
    by DensePose part (the joints of a part pooled) and coded along the part's one axis (`PART_AXES`)."""
    rest = model.v_template
    jr = model.rest_joints
    owner = model.weights.argmax(1)
    forward = np.array([0.0, 0.0, 1.0])  # SMPL's rest body faces +Z
    codes = np.zeros((len(rest), 3))
    for labels, (j0, j1) in PART_AXES.items():
        joints = [j for j, lab in JOINT_PARTS.items() if lab == labels]
        idx = np.flatnonzero(np.isin(owner, joints))
        if not len(idx):
            continue
        a = jr[j0]
        axis = jr[j1] - a
        length = float(np.linalg.norm(axis))
        axis = axis / length if length > 1e-9 else np.array([0.0, 1.0, 0.0])
        e1 = forward - (forward @ axis) * axis
        if np.linalg.norm(e1) < 1e-6:
            e1 = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(axis, e1)
        d = rest[idx] - a
        along = d @ axis
        v = (along - along.min()) / max(along.max() - along.min(), 1e-9)
        radial = d - along[:, None] * axis
        phi = np.arctan2(radial @ e2, radial @ e1)  # (-pi, pi], 0 = forward
        if len(labels) == 2:  # front / back halves about the axis, u running 0 -> 1 across each half
            back = np.cos(phi) < 0
            lab = np.where(back, labels[1], labels[0])
            u = np.where(back, np.mod(phi - 0.5 * math.pi, 2 * math.pi), phi + 0.5 * math.pi) / math.pi
        else:
            lab = np.full(len(idx), labels[0])
            u = np.mod(phi, 2 * math.pi) / (2 * math.pi)
        codes[idx] = np.stack([lab, np.clip(u, 0.0, 1.0), v], 1)
    return codes


def mesh_bounds(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box ``(lo, hi)`` of every vertex of every frame."""
    v = np.asarray(vertices).reshape(-1, 3)
    return v.min(0), v.max(0)


def render_mesh(vertices, faces, codes, camera):
    """Rasterise ``(T, V, 3)`` world vertices with per-vertex ``codes`` ``(V, 3)`` in ``camera``: a `BodyRender`
    (depth = camera z, 0 on the background; iuv; mask; face normals; grey shading; for a mesh ``capsule`` holds the
    hit part's label - 1, -1 on the background, not a capsule index)."""
    from dancegen.motion.render import AMBIENT, BodyRender

    verts = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    h, w = camera.height, camera.width
    n = len(verts)
    depth = np.zeros((n, h, w), np.float32)
    iuv = np.zeros((n, h, w, 3), np.float32)
    normals = np.zeros((n, h, w, 3), np.float32)
    shaded = np.zeros((n, h, w, 3), np.uint8)
    part = np.full((n, h, w), -1, np.int16)
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    rays = camera.pixel_rays()
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)  # unit view directions, for the shading
    for f in range(n):
        xc = camera.to_camera(verts[f])
        z = xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            px = np.stack([xc[:, 0] / z * fx + cx, xc[:, 1] / z * fy + cy], 1)
        zbuf = np.full((h, w), np.inf)
        tri_n = np.cross(xc[faces[:, 1]] - xc[faces[:, 0]], xc[faces[:, 2]] - xc[faces[:, 0]])
        tri_n /= np.maximum(np.linalg.norm(tri_n, axis=1, keepdims=True), 1e-12)
        for k, (i0, i1, i2) in enumerate(faces):
            zs = z[[i0, i1, i2]]
            if (zs <= 1e-6).any():
                continue
            p = px[[i0, i1, i2]]
            x0, x1 = max(int(math.ceil(p[:, 0].min())), 0), min(int(math.floor(p[:, 0].max())), w - 1)
            y0, y1 = max(int(math.ceil(p[:, 1].min())), 0), min(int(math.floor(p[:, 1].max())), h - 1)
            if x0 > x1 or y0 > y1:
                continue
            area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
            if abs(area) < 1e-12:
                continue
            gx, gy = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64), np.arange(y0, y1 + 1, dtype=np.float64))
            b1 = ((gx - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (gy - p[0, 1])) / area
            b2 = ((p[1, 0] - p[0, 0]) * (gy - p[0, 1]) - (gx - p[0, 0]) * (p[1, 1] - p[0, 1])) / area
            b0 = 1.0 - b1 - b2
            inside = (b0 >= -1e-9) & (b1 >= -1e-9) & (b2 >= -1e-9)
            if not inside.any():
                continue
            bary = np.stack([b0[inside], b1[inside], b2[inside]], 1)
            inv_z = bary @ (1.0 / zs)  # 1/z is affine in screen space
            zz = 1.0 / inv_z
            ys, xs = gy[inside].astype(np.int64), gx[inside].astype(np.int64)
            closer = zz < zbuf[ys, xs]
            if not closer.any():
                continue
            ys, xs, zz, bary = ys[closer], xs[closer], zz[closer], bary[closer]
            zbuf[ys, xs] = zz
            persp = bary / zs * zz[:, None]  # perspective-correct weights
            c = codes[[i0, i1, i2]]
            nearest = persp.argmax(1)
            same = (c[0, 0] == c[1, 0] == c[2, 0])
            uv = persp @ c[:, 1:] if same else c[nearest, 1:]
            depth[f, ys, xs] = zz
            iuv[f, ys, xs, 0] = c[nearest, 0]
            iuv[f, ys, xs, 1:] = uv
            nrm = tri_n[k] if tri_n[k][2] < 0 else -tri_n[k]  # towards the camera
            normals[f, ys, xs] = nrm
            part[f, ys, xs] = c[nearest, 0] - 1
        hit = depth[f] > 0
        lambert = np.clip(-(normals[f] * rays).sum(-1), 0.0, 1.0)
        grey = np.rint(255.0 * (AMBIENT + (1.0 - AMBIENT) * lambert)).astype(np.uint8)
        shaded[f][hit] = grey[hit][:, None]
    return BodyRender(depth, iuv, depth > 0, normals, shaded, part, camera)
