"""Flow files (.flo, .npz, folders) and the Middlebury colour wheel."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.flow.io import load_flow_npz, read_flo, read_flow_folder, save_flow_npz, write_flo, write_flow_folder
from dancegen.flow.vis import colorwheel_legend, flow_to_color, flows_to_colors, make_colorwheel


def _field(h=5, w=7, seed=0):
    return np.random.default_rng(seed).normal(0, 3, (2, h, w)).astype(np.float32)


def test_flo_roundtrip_and_exact_layout(tmp_path):
    f = _field()
    write_flo(tmp_path / "a.flo", f)
    data = (tmp_path / "a.flo").read_bytes()
    assert data[:4] == b"PIEH" and struct.unpack("<f", data[:4])[0] == 202021.25
    assert struct.unpack("<ii", data[4:12]) == (7, 5)
    assert len(data) == 12 + 5 * 7 * 2 * 4
    # Interleaved (dx, dy) per pixel, row-major.
    assert struct.unpack("<ff", data[12:20]) == (f[0, 0, 0], f[1, 0, 0])
    assert struct.unpack("<ff", data[20:28]) == (f[0, 0, 1], f[1, 0, 1])
    np.testing.assert_array_equal(read_flo(tmp_path / "a.flo"), f)


def test_read_flo_hand_made_file(tmp_path):
    # 2 x 1 field written byte by byte: pixel (0,0) = (1.5, -2), pixel (0,1) = (0.25, 4).
    raw = struct.pack("<f", 202021.25) + struct.pack("<ii", 2, 1) + struct.pack("<4f", 1.5, -2, 0.25, 4)
    (tmp_path / "h.flo").write_bytes(raw)
    f = read_flo(tmp_path / "h.flo")
    assert f.shape == (2, 1, 2) and f.dtype == np.float32
    np.testing.assert_array_equal(f[0, 0], [1.5, 0.25])
    np.testing.assert_array_equal(f[1, 0], [-2, 4])


@pytest.mark.parametrize("raw,msg", [
    (b"XXXX" + struct.pack("<ii", 2, 2) + bytes(32), "magic"),
    (b"PIEH" + struct.pack("<ii", 4, 4) + bytes(40), "truncated"),
    (b"PIEH" + struct.pack("<ii", -1, 4), "not plausible"),
    (b"PIEH" + struct.pack("<ii", 1 << 20, 1 << 20), "not plausible"),
    (b"PIEH" + struct.pack("<ii", 1, 1) + bytes(12), "trailing"),
    (b"PIE", "header"),
])
def test_bad_flo_files_raise_input_error_naming_file(tmp_path, raw, msg):
    p = tmp_path / "bad.flo"
    p.write_bytes(raw)
    with pytest.raises(InputError, match=msg) as e:
        read_flo(p)
    assert e.value.path == str(p) and "bad.flo" in str(e.value)


def test_missing_flo_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_flo(tmp_path / "none.flo")


def test_write_flo_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        write_flo(tmp_path / "x.flo", np.zeros((5, 7, 2)))


def test_npz_roundtrip(tmp_path):
    flows = np.stack([_field(seed=i) for i in range(3)])
    save_flow_npz(tmp_path / "f.npz", flows, "backward", {"method": "pose", "size": [5, 7]})
    d = load_flow_npz(tmp_path / "f.npz")
    np.testing.assert_array_equal(d.flow, flows)
    assert d.direction == "backward" and d.meta == {"method": "pose", "size": [5, 7]}
    assert not list(tmp_path.glob(".*part*"))  # atomic write left no temp file


def test_npz_other_layouts_and_errors(tmp_path):
    hw2 = np.random.default_rng(0).normal(size=(2, 4, 6, 2)).astype(np.float32)
    np.savez(tmp_path / "hw2.npz", flow_fw=hw2)  # a single array under another name, (F-1, H, W, 2)
    d = load_flow_npz(tmp_path / "hw2.npz")
    assert d.flow.shape == (2, 2, 4, 6) and d.direction == "forward"
    np.testing.assert_array_equal(d.flow[1, 0], hw2[1, ..., 0])
    np.savez(tmp_path / "two.npz", a=hw2, b=hw2)
    with pytest.raises(InputError, match="no 'flow' array"):
        load_flow_npz(tmp_path / "two.npz")
    np.savez(tmp_path / "shape.npz", flow=np.zeros((3, 3)))
    with pytest.raises(InputError, match="must be"):
        load_flow_npz(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz"):
        load_flow_npz(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="direction"):
        save_flow_npz(tmp_path / "x.npz", hw2.transpose(0, 3, 1, 2), "sideways")


def test_flow_folder(tmp_path):
    flows = np.stack([_field(8, 10, seed=i) for i in range(3)])
    paths = write_flow_folder(tmp_path / "out", flows, "forward")
    assert [p.name for p in paths] == ["frame_00000.flo", "frame_00001.flo", "frame_00002.flo"]
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    from dancegen.io.video import read_image

    img = read_image(tmp_path / "out" / "frame_00001.png")
    np.testing.assert_array_equal(img, flows_to_colors(flows)[1])
    back = read_flow_folder(tmp_path / "out")
    np.testing.assert_array_equal(back.flow, flows)
    assert back.direction == "forward" and back.meta["num_pairs"] == 3


# ---------------------------------------------------------------- colour wheel


def test_colorwheel_segments():
    w = make_colorwheel()
    assert w.shape == (55, 3)
    np.testing.assert_array_equal(w[0], [255, 0, 0])      # RY starts red
    np.testing.assert_array_equal(w[15], [255, 255, 0])   # YG starts yellow
    np.testing.assert_array_equal(w[21], [0, 255, 0])     # GC starts green
    np.testing.assert_array_equal(w[25], [0, 255, 255])   # CB starts cyan
    np.testing.assert_array_equal(w[36], [0, 0, 255])     # BM starts blue
    np.testing.assert_array_equal(w[49], [255, 0, 255])   # MR starts magenta
    np.testing.assert_array_equal(w[54], [255, 0, 255 - 212])  # floor(255*5/6) = 212


def _color(dx, dy, max_flow=1.0):
    f = np.zeros((2, 1, 1), np.float32)
    f[0], f[1] = dx, dy
    return flow_to_color(f, max_flow)[0, 0].tolist()


def test_flow_to_color_hand_computed_directions():
    # Hand computation with fk = (atan2(-dy, -dx)/pi + 1)/2 * 54 (flow-code):
    # right: atan2(-0, -1) = -pi -> fk 0 -> wheel[0] = red.
    assert _color(1, 0) == [255, 0, 0]
    # down: atan2(-1, -0) = -pi/2 -> fk 13.5 -> mean of wheel[13] (255,221,0) and wheel[14] (255,238,0).
    assert _color(0, 1) == [255, 229, 0]
    # left: atan2(-0, 1) = -0 -> fk 27 -> wheel[27] = CB i=2: (0, 255 - floor(510/11) = 209, 255).
    assert _color(-1, 0) == [0, 209, 255]
    # up: atan2(1, -0) = pi/2 -> fk 40.5 -> mean of wheel[40] (78,0,255) and wheel[41] (98,0,255).
    assert _color(0, -1) == [88, 0, 255]


def test_flow_to_color_magnitude_and_zero():
    assert _color(0, 0) == [255, 255, 255]
    assert flow_to_color(np.zeros((2, 3, 3))).tolist() == [[[255] * 3] * 3] * 3  # auto scale, zero flow
    assert _color(0.5, 0) == [255, 127, 127]  # 1 - 0.5 * (1 - col): floor(127.5)
    assert _color(2, 0) == [191, 0, 0]  # beyond max_flow: col * 0.75
    # Auto scale = largest magnitude: the longest vector is fully saturated.
    f = np.zeros((2, 1, 2), np.float32)
    f[0, 0] = [10, 5]
    assert flow_to_color(f)[0, 0].tolist() == [255, 0, 0]
    assert flow_to_color(f)[0, 1].tolist() == [255, 127, 127]


def test_flow_to_color_nonfinite_and_torch():
    import torch

    f = np.zeros((2, 2, 2), np.float32)
    f[0, 0, 0] = np.nan
    f[0, 1, 1] = 1
    img = flow_to_color(f)
    assert img[0, 0].tolist() == [0, 0, 0] and img[1, 1].tolist() == [255, 0, 0]
    np.testing.assert_array_equal(flow_to_color(torch.from_numpy(f)), img)


def test_legend_centre_white_edge_saturated():
    leg = colorwheel_legend(65)
    assert leg[32, 32].tolist() == [255, 255, 255]
    assert leg[32, 64].tolist() == [255, 0, 0]  # +x at radius 1
