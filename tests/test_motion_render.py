"""Capsule body, ray-capsule renderer (depth / IUV) and IUV correspondences (LatentMan spec §2.2, §2.4)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.metrics import consistency as cs
from dancegen.motion import body as cb
from dancegen.motion.correspondence import (
    chain_correspondences,
    correspondence_sets,
    downsample_iuv,
    load_correspondences,
    match_pair,
    propagate_iuv,
    save_correspondences,
)
from dancegen.motion.render import depth_control, fixed_camera, project_joints, render_body
from dancegen.pose.skeletons import HUMANML3D22
from dancegen.synth.body import BodyShape, pose_body

J = {n: i for i, n in enumerate(HUMANML3D22.joints)}


def _pose(euler: dict | None = None, frames: int = 1, yaw: float = 0.0, x: float = 0.0) -> np.ndarray:
    """`(frames, 22, 3)` joints: the synthetic dancer's T-pose with some local Euler angles (degrees)."""
    e = np.zeros((frames, 22, 3))
    for name, ang in (euler or {}).items():
        e[:, J[name]] = ang
    root = np.zeros((frames, 2))
    root[:, 0] = x
    pos, *_ = pose_body(e, np.full(frames, yaw), root, np.zeros(frames), BodyShape())
    return pos


def _dance(frames: int = 3) -> np.ndarray:
    """A few frames of a moving pose (arms, knees, a turn)."""
    out = []
    for t in range(frames):
        out.append(_pose({"l_shoulder": (0, 20 * t, -30), "r_elbow": (0, -40 - 10 * t, 0), "l_knee": (15 * t, 0, 0),
                          "r_hip": (-20, 0, 5 * t), "spine2": (0, 8 * t, 0)}, yaw=10.0 * t, x=0.05 * t)[0])
    return np.stack(out)


# ------------------------------------------------------------------------------------------------------------------
# body / renderer
# ------------------------------------------------------------------------------------------------------------------


def test_render_fields_labels_depth_and_determinism():
    joints = _dance(3)
    r = render_body(joints, 64)
    assert r.depth.shape == (3, 64, 64) and r.depth.dtype == np.float32
    assert r.iuv.shape == (3, 64, 64, 3) and r.iuv.dtype == np.float32
    assert r.shaded.shape == (3, 64, 64, 3) and r.shaded.dtype == np.uint8
    lab = r.iuv[..., 0]
    np.testing.assert_array_equal(lab, np.rint(lab))
    assert lab.min() >= 0 and lab.max() <= 24
    fg = lab > 0
    np.testing.assert_array_equal(r.depth > 0, fg)
    np.testing.assert_array_equal(r.mask, fg)
    assert fg.sum() > 0.05 * fg.size
    assert (r.depth[~fg] == 0).all() and (r.iuv[~fg] == 0).all() and (r.shaded[~fg] == 0).all()
    assert (r.iuv[..., 1:] >= 0).all() and (r.iuv[..., 1:] <= 1).all()
    np.testing.assert_allclose(np.linalg.norm(r.normals[fg], axis=-1), 1.0, atol=1e-5)
    assert (r.shaded[fg] > 0).all()
    assert ((r.capsule >= 0) == fg).all()
    r2 = render_body(joints, 64)
    for a, b in ((r.depth, r2.depth), (r.iuv, r2.iuv), (r.normals, r2.normals), (r.shaded, r2.shaded)):
        np.testing.assert_array_equal(a, b)
    # non-square sizes and bad input
    assert render_body(joints[:1], (40, 56)).iuv.shape == (1, 40, 56, 3)
    with pytest.raises(InputError):
        render_body(np.zeros((2, 21, 3)), 32)


def test_tpose_front_view_layout():
    r = render_body(_pose(), 128)
    lab = r.labels[0]
    assert set(np.unique(lab).tolist()) == set(range(25)), "every DensePose part is visible in a frontal T-pose"
    ys, xs = np.mgrid[0:128, 0:128]

    def mean_x(labels):
        m = np.isin(lab, labels)
        return xs[m].mean()

    def mean_y(labels):
        m = np.isin(lab, labels)
        return ys[m].mean()

    # the body faces the camera: its left parts are on the image's right side
    for left, right in ((cb.L_HAND, cb.R_HAND), (cb.L_FOOT, cb.R_FOOT), (cb.L_UPPER_LEG, cb.R_UPPER_LEG),
                        (cb.L_LOWER_LEG, cb.R_LOWER_LEG), (cb.L_UPPER_ARM, cb.R_UPPER_ARM),
                        (cb.L_LOWER_ARM, cb.R_LOWER_ARM)):
        assert mean_x(left) > mean_x(right) + 3
    assert mean_x(cb.LEFT_LABELS) > 64 > mean_x(cb.RIGHT_LABELS)
    # head on top, feet at the bottom
    assert mean_y(cb.HEAD) < mean_y(cb.TORSO) < mean_y(cb.L_LOWER_LEG) < mean_y((cb.L_FOOT, cb.R_FOOT))
    fg_rows = np.nonzero(lab.any(axis=1))[0]
    assert lab[fg_rows[0]].max() in cb.HEAD
    assert set(lab[fg_rows[-1]][lab[fg_rows[-1]] > 0].tolist()) <= {cb.L_FOOT, cb.R_FOOT, *cb.L_LOWER_LEG,
                                                                       *cb.R_LOWER_LEG}
    # the two halves of the torso are its sides (split through the bone and the forward direction)
    assert mean_x(1) > mean_x(2)


def test_shift_px_is_an_exact_image_translation():
    joints = _dance(2)
    cam = fixed_camera(joints, 96, margin=0.2)
    a = render_body(joints, camera=cam)
    b = render_body(joints, camera=cam, shift_px=(5, -3))
    rolled = np.roll(a.iuv, (-3, 5), axis=(1, 2))
    np.testing.assert_array_equal(rolled[..., 0], b.iuv[..., 0])
    np.testing.assert_allclose(rolled, b.iuv, atol=1e-6)
    assert b.camera.K[0, 2] == cam.K[0, 2] + 5 and b.camera.K[1, 2] == cam.K[1, 2] - 3
    shift = project_joints(joints, cam, (5, -3)) - project_joints(joints, cam)
    np.testing.assert_allclose(shift, np.broadcast_to([5.0, -3.0], shift.shape), atol=1e-9)


def test_surface_code_moves_with_the_body():
    """The same body point has the same (part, u, v) after a rigid translation (exact, at the body level)."""
    joints = _dance(2)
    delta = np.array([0.4, -0.2, 0.7])
    ca, cb_ = cb.CapsuleBody().capsules(joints), cb.CapsuleBody().capsules(joints + delta)
    rng = np.random.default_rng(0)
    for f in range(2):
        for k in range(len(cb.CAPSULE_NAMES)):
            a, w, length, r = ca.start[f, k], ca.axis[f, k], ca.length[f, k], ca.radius[k]
            # random points on the capsule surface: a segment point plus r along a random unit direction
            s = rng.uniform(-0.2, 1.2, 50).clip(0, 1) * length
            d = rng.normal(size=(50, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            pts = a + s[:, None] * w + r * d
            code_a = cb.capsule_surface(pts, a, w, length, r, ca.e1[f, k], ca.e2[f, k], ca.labels[k])
            code_b = cb.capsule_surface(pts + delta, cb_.start[f, k], cb_.axis[f, k], cb_.length[f, k],
                                        cb_.radius[k], cb_.e1[f, k], cb_.e2[f, k], cb_.labels[k])
            np.testing.assert_array_equal(code_a[0], code_b[0])
            np.testing.assert_allclose(code_a[1], code_b[1], atol=1e-9)
            np.testing.assert_allclose(code_a[2], code_b[2], atol=1e-9)
            assert set(code_a[0].tolist()) <= set(ca.labels[k].tolist())


def test_render_translation_keeps_codes_at_reprojected_pixels():
    joints = _dance(1)
    delta = np.array([0.25, 0.1, -0.3])
    cam = fixed_camera(np.concatenate([joints, joints + delta]), 192)
    a, b = render_body(joints, camera=cam), render_body(joints + delta, camera=cam)
    ys, xs = np.nonzero(a.mask[0])
    pts_cam = a.depth[0, ys, xs, None].astype(np.float64) * cam.pixel_rays()[ys, xs]
    world = (pts_cam - cam.t) @ cam.R  # camera -> world
    q = np.rint(cam.project(world + delta)).astype(int)
    inside = (q[:, 0] >= 1) & (q[:, 0] < 191) & (q[:, 1] >= 1) & (q[:, 1] < 191)
    assert inside.all()
    ia = a.iuv[0, ys, xs]
    exact = b.iuv[0, q[:, 1], q[:, 0]]
    assert (exact[:, 0] == ia[:, 0]).mean() > 0.85  # misses: the seams between half-cylinders, silhouettes
    # rounding to a pixel moves up to half a pixel, across a seam at worst: look in the 3x3 neighbourhood
    err = np.full(len(ys), np.inf)
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        ib = b.iuv[0, q[:, 1] + dy, q[:, 0] + dx]
        d = np.abs(ib[:, 1:] - ia[:, 1:]).max(1)
        err = np.where(ib[:, 0] == ia[:, 0], np.minimum(err, d), err)
    assert (err < 0.1).mean() > 0.97
    assert np.median(err) < 0.04


def test_fixed_camera_frames_the_whole_sequence():
    joints = _pose(frames=5)
    joints[:, :, 0] += np.linspace(-0.8, 0.8, 5)[:, None]  # walks sideways 1.6 m
    cam = fixed_camera(joints, 64)
    r = render_body(joints, camera=cam)
    assert r.camera is cam
    for f in range(5):
        m = r.mask[f]
        assert m.any() and not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    assert cam.center[2] > joints[..., 2].max() + 0.5  # in front of the body (+Z)
    assert cam.yfov_deg == pytest.approx(60.0)
    # the body walks to its left (+X), which is the image's right
    cx = [np.nonzero(r.mask[f])[1].mean() for f in range(5)]
    assert np.all(np.diff(cx) > 0)


def test_project_joints_lands_on_the_body():
    joints = _pose()
    r = render_body(joints, 128)
    xy = project_joints(joints, r.camera)
    assert xy.shape == (1, 22, 2)
    pix = np.rint(xy[0]).astype(int)
    lab = r.labels[0]
    for name in ("pelvis", "spine2", "head", "l_elbow", "r_wrist", "l_knee", "r_ankle", "l_shoulder"):
        x, y = pix[J[name]]
        assert lab[y, x] > 0, name
    assert lab[pix[J["head"]][1], pix[J["head"]][0]] in cb.HEAD
    assert lab[pix[J["pelvis"]][1], pix[J["pelvis"]][0]] in cb.TORSO


def test_depth_control_near_is_bright():
    joints = _pose({"l_shoulder": (0, 60, 0)})  # the left arm swings forward, towards the camera
    r = render_body(joints, 96)
    img = depth_control(r)
    assert img.shape == (1, 96, 96) and img.dtype == np.uint8
    fg = r.mask[0]
    assert (img[0][~fg] == 0).all() and (img[0][fg] > 0).all()
    z = np.where(fg, r.depth[0], np.nan)
    near, far = np.unravel_index(np.nanargmin(z), z.shape), np.unravel_index(np.nanargmax(z), z.shape)
    assert img[0][near] == 255 and img[0][far] < 100
    lin = depth_control(r, "official_linear")
    assert (lin[0][~fg] == 0).all() and lin[0][near] < lin[0][far]
    with pytest.raises(InputError):
        depth_control(r, "midas")


def test_render_speed_small():
    joints = _dance(8)
    render_body(joints[:1], 64)
    t0 = time.perf_counter()
    render_body(joints, 64)
    assert time.perf_counter() - t0 < 2.0  # ~0.05 s on one core; generous for loaded CI machines


# ------------------------------------------------------------------------------------------------------------------
# correspondences
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted_iuv():
    """Three 256-px renders of the same pose moved by (8, 4) px per frame (the shift_px 'roll')."""
    joints = _dance(1)
    cam = fixed_camera(joints, 256, margin=0.15)
    return np.concatenate([render_body(joints, camera=cam, shift_px=(8 * i, 4 * i)).iuv for i in range(3)])


@pytest.mark.parametrize("res", [64, 128])
@pytest.mark.parametrize("chain", ["prev_new", "prev", "first"])
def test_translation_gives_exact_shift_matches(shifted_iuv, res, chain):
    f = 256 // res
    pairs = chain_correspondences(shifted_iuv, res, chain=chain)
    assert len(pairs) == 2
    fg = downsample_iuv(shifted_iuv, res)[..., 0] > 0
    for i, (yr, xr, yc, xc) in enumerate(pairs, start=1):
        step = i if chain == "first" else 1
        ok = (xc - xr == 8 * step // f) & (yc - yr == 4 * step // f)
        assert ok.mean() >= 0.95
        assert len(yc) >= 0.95 * fg[i].sum()
        assert len(set(zip(yr.tolist(), xr.tolist(), strict=True))) == len(yr)  # injective
        assert len(set(zip(yc.tolist(), xc.tolist(), strict=True))) == len(yc)


@pytest.mark.parametrize("features,solver", [("paper", "hungarian"), ("official", "nearest")])
def test_translation_other_features_and_solver(shifted_iuv, features, solver):
    (yr, xr, yc, xc), _ = chain_correspondences(shifted_iuv, 64, chain="prev", features=features, solver=solver)
    assert ((xc - xr == 2) & (yc - yr == 1)).mean() >= 0.95


def _blob_iuv(spec, size=8, seed=0):
    """An (size, size, 3) IUV map; spec = {label: list of (y, x)}; random u, v."""
    rng = np.random.default_rng(seed)
    iuv = np.zeros((size, size, 3), np.float32)
    for lab, pix in spec.items():
        for y, x in pix:
            iuv[y, x] = (lab, rng.uniform(), rng.uniform())
    return iuv


def test_rectangular_sets_absent_parts_and_injectivity():
    ref = _blob_iuv({1: [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)], 2: [(5, 5), (5, 6)], 7: [(3, 3)]}, seed=1)
    cur = _blob_iuv({1: [(2, 2), (2, 3), (3, 2), (3, 3)], 2: [(6, 1), (6, 2), (6, 3)], 9: [(7, 7)]}, seed=2)
    yr, xr, yc, xc = match_pair(ref, cur)
    lab_r, lab_c = ref[yr, xr, 0], cur[yc, xc, 0]
    np.testing.assert_array_equal(lab_r, lab_c)  # matches stay within a part
    assert (lab_r == 1).sum() == 4 and (lab_r == 2).sum() == 2  # min(|Q|, |S|) per part
    assert not np.isin(lab_r, [7, 9]).any()  # parts present in one frame only give nothing
    assert len(set(zip(yr.tolist(), xr.tolist(), strict=True))) == len(yr)
    assert len(set(zip(yc.tolist(), xc.tolist(), strict=True))) == len(yc)
    # no common part: no pairs at all
    empty = match_pair(ref, _blob_iuv({5: [(1, 1)]}))
    assert all(len(a) == 0 for a in empty)


@pytest.mark.parametrize("features", ["official", "paper"])
@pytest.mark.parametrize("n_ref,n_cur", [(5, 5), (6, 4), (3, 5)])
def test_hungarian_equals_brute_force(features, n_ref, n_cur):
    rng = np.random.default_rng(n_ref * 10 + n_cur)
    cells = [(y, x) for y in range(4) for x in range(4)]
    pr = [cells[i] for i in rng.choice(16, n_ref, replace=False)]
    pc = [cells[i] for i in rng.choice(16, n_cur, replace=False)]
    ref, cur = _blob_iuv({3: pr}, 4, seed=3), _blob_iuv({3: pc}, 4, seed=4)
    yr, xr, yc, xc = match_pair(ref, cur, features=features)
    assert len(yr) == min(n_ref, n_cur)
    ys_r, xs_r = np.nonzero(ref[..., 0] == 3)
    ys_c, xs_c = np.nonzero(cur[..., 0] == 3)
    fr = cs._part_features(ref, ys_r, xs_r, features)
    fc = cs._part_features(cur, ys_c, xs_c, features)
    cost = np.sqrt(((fc[:, None] - fr[None]) ** 2).sum(-1))
    ir_of = {(y, x): i for i, (y, x) in enumerate(zip(ys_r.tolist(), xs_r.tolist(), strict=True))}
    ic_of = {(y, x): i for i, (y, x) in enumerate(zip(ys_c.tolist(), xs_c.tolist(), strict=True))}
    got = sum(cost[ic_of[(c_y, c_x)], ir_of[(r_y, r_x)]]
              for r_y, r_x, c_y, c_x in zip(yr.tolist(), xr.tolist(), yc.tolist(), xc.tolist(), strict=True))
    if n_cur <= n_ref:
        best = min(sum(cost[i, p[i]] for i in range(n_cur)) for p in itertools.permutations(range(n_ref), n_cur))
    else:
        best = min(sum(cost[p[i], i] for i in range(n_ref)) for p in itertools.permutations(range(n_cur), n_ref))
    assert got == pytest.approx(best, rel=1e-9, abs=1e-9)


def _random_sequence():
    """Three 8x8 maps, parts 1 and 2 of varying sizes with random (u, v): the chain modes then disagree."""
    frames = []
    for t, (n1, n2) in enumerate(((12, 6), (16, 5), (14, 8))):
        rng = np.random.default_rng(100 + t)
        cells = [(y, x) for y in range(8) for x in range(8)]
        idx = rng.choice(64, n1 + n2, replace=False)
        frames.append(_blob_iuv({1: [cells[i] for i in idx[:n1]], 2: [cells[i] for i in idx[n1:]]}, seed=200 + t))
    return np.stack(frames)


def test_chain_modes():
    iuv = _random_sequence()
    first = chain_correspondences(iuv, None, chain="first")
    prev = chain_correspondences(iuv, None, chain="prev")
    prop_pairs, maps = chain_correspondences(iuv, None, chain="prev_new", return_maps=True)

    def same(p, q):
        return all(np.array_equal(a, b) for a, b in zip(p, q, strict=True))

    # "first": every frame against frame 0; "prev": raw consecutive pairs
    assert same(first[1], match_pair(iuv[0], iuv[2])) and same(prev[1], match_pair(iuv[1], iuv[2]))
    assert same(first[0], prev[0]) and same(prop_pairs[0], prev[0])
    # "prev_new": frame 1's matched pixels carry frame 0's values, unmatched ones keep their own
    yr, xr, yc, xc = prop_pairs[0]
    np.testing.assert_array_equal(maps[0], iuv[0])
    np.testing.assert_array_equal(maps[1][yc, xc], iuv[0][yr, xr])
    unmatched = np.ones((8, 8), bool)
    unmatched[yc, xc] = False
    assert unmatched[iuv[1][..., 0] > 0].any()
    np.testing.assert_array_equal(maps[1][unmatched], iuv[1][unmatched])
    np.testing.assert_array_equal(maps[1], propagate_iuv(iuv[0], iuv[1], prop_pairs[0]))
    # ... and frame 2 is matched against that propagated map, which changes the answer
    assert same(prop_pairs[1], match_pair(maps[1], iuv[2]))
    assert not same(prop_pairs[1], prev[1])
    assert not same(first[1], prev[1])
    with pytest.raises(InputError):
        chain_correspondences(iuv, None, chain="anchor")


def test_downsample_iuv_nearest():
    iuv = np.zeros((2, 8, 8, 3), np.float32)
    iuv[:, ::2, ::2] = (3, 0.25, 0.75)
    small = downsample_iuv(iuv, 4)
    assert small.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(small[..., 0], 3)  # values are picked, never blended
    assert downsample_iuv(iuv[0], (2, 4)).shape == (2, 4, 3)


def test_save_load_roundtrip(tmp_path, shifted_iuv):
    sets = correspondence_sets(shifted_iuv[:2], resolutions=(32, 64))
    p = save_correspondences(tmp_path / "c.npz", sets)
    back = load_correspondences(p)
    assert sorted(back) == [32, 64]
    for r in (32, 64):
        for a, b in zip(sets[r], back[r], strict=True):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
    lst = [(np.array([1]), np.array([2]), np.array([3]), np.array([4])),
           tuple(np.zeros(0, np.int64) for _ in range(4))]
    back = load_correspondences(save_correspondences(tmp_path / "l.npz", lst))
    assert len(back) == 2 and back[0][3].tolist() == [4] and len(back[1][0]) == 0
    with pytest.raises(InputError):
        load_correspondences(tmp_path / "missing.npz")
