"""DWPose backend: SimCC decoding, YOLOX decoding, crop geometry, missing weights, and the whole estimator on
two constant-output ONNX models written here with a minimal protobuf encoder (the `onnx` package is not installed,
and torch.onnx.export needs it)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dancegen.errors import MissingWeightsError
from dancegen.pose.backends import dwpose as dw


def test_simcc_decode_argmax_split_ratio_and_invalid():
    k = 3
    sx = np.full((k, 576), -1.0, np.float32)
    sy = np.full((k, 768), -1.0, np.float32)
    sx[0, 101], sy[0, 300] = 0.9, 0.7
    sx[1, 0], sy[1, 767] = 0.4, 0.95
    locs, vals = dw.simcc_decode(sx, sy)
    np.testing.assert_allclose(locs[:2], [[50.5, 150.0], [0.0, 383.5]])
    np.testing.assert_allclose(vals[:2], [0.7, 0.4])  # min of the two maxima
    assert vals[2] == -1.0 and (locs[2] == -1).all()  # score <= 0 -> location -1
    # Batched input keeps the leading axes.
    locs_b, vals_b = dw.simcc_decode(sx[None], sy[None])
    assert locs_b.shape == (1, 3, 2) and vals_b.shape == (1, 3)


def test_crop_geometry_round_trip():
    box = np.array([120.0, 40.0, 200.0, 200.0])
    center, scale = dw.box_to_center_scale(box)
    np.testing.assert_allclose(center, [160, 120])
    np.testing.assert_allclose(scale, [150, 200])  # (100, 200) after 1.25 padding, widened to the 3:4 input
    m = dw.crop_matrix(center, scale)
    for p in ([160, 120], [85, 20], [235, 220]):  # centre and the two crop corners
        crop_pt = m[:, :2] @ p + m[:, 2]
        np.testing.assert_allclose(dw.crop_to_image(crop_pt, center, scale), p, atol=1e-9)
    np.testing.assert_allclose(m[:, :2] @ [85, 20] + m[:, 2], [0, 0], atol=1e-9)
    np.testing.assert_allclose(m[:, :2] @ [235, 220] + m[:, 2], [288, 384], atol=1e-9)


def _yolox_output_with_box(cx, cy, w, h, ratio, obj=0.9, cls=0.9, stride=32, extra=None):
    """A raw (1, 8400, 85) YOLOX output holding one box (input-image pixels) on a stride-32 cell."""
    out = np.zeros((1, 8400, 85), np.float32)
    ccx, ccy = cx * ratio / stride, cy * ratio / stride
    gx, gy = int(ccx), int(ccy)
    row = 6400 + 1600 + gy * 20 + gx
    out[0, row, :4] = [ccx - gx, ccy - gy, np.log(w * ratio / stride), np.log(h * ratio / stride)]
    out[0, row, 4], out[0, row, 5] = obj, cls
    if extra is not None:
        out[0, row + 1] = out[0, row]
        out[0, row + 1, 4:6] = extra
    return out


def test_yolox_grids_and_postprocess():
    grids, strides = dw.yolox_grids()
    assert grids.shape == (8400, 2) and strides[0, 0] == 8 and strides[-1, 0] == 32
    np.testing.assert_allclose(grids[[0, 1, 80, 6400, 8399]], [[0, 0], [1, 0], [0, 1], [0, 0], [19, 19]])
    out = _yolox_output_with_box(160, 120, 80, 160, ratio=2.0, extra=(0.9, 0.3))  # duplicate with score 0.27
    boxes = dw.yolox_postprocess(out, ratio=2.0)
    assert boxes.shape == (1, 5)  # the overlapping weaker copy is suppressed
    np.testing.assert_allclose(boxes[0], [120, 40, 200, 200, 0.81], atol=1e-4)
    # A non-person class or a low score is dropped.
    out = _yolox_output_with_box(160, 120, 80, 160, ratio=2.0, cls=0.2)
    assert dw.yolox_postprocess(out, ratio=2.0).shape == (0, 5)
    with pytest.raises(ValueError, match="8400"):
        dw.yolox_postprocess(np.zeros((1, 100, 85), np.float32), 1.0)


def test_yolox_preprocess_letterbox():
    img = np.full((240, 320, 3), 7, np.uint8)
    x, r = dw.yolox_preprocess(img)
    assert x.shape == (1, 3, 640, 640) and x.dtype == np.float32 and r == 2.0
    assert x[0, :, 479, 639].tolist() == [7, 7, 7] and x[0, :, 480, 0].tolist() == [114, 114, 114]


def test_missing_weights_names_both_files_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        dw.DWPoseEstimator()
    msg = str(e.value)
    assert "yolox_l.onnx" in msg and "dw-ll_ucoco_384.onnx" in msg
    assert str(tmp_path / "dwpose") in msg and "huggingface.co/yzd-v/DWPose" in msg


# --- a minimal ONNX writer (protobuf wire format) for constant-output test models --------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _value_info(name: str, shape) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)
    tensor_type = _field(1, 1) + _field(2, dims)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _constant_model(input_name: str, input_shape, outputs: dict[str, np.ndarray]) -> bytes:
    graph = b""
    for name in outputs:
        graph += _field(1, _field(1, f"{name}_const") + _field(2, name) + _field(4, "Identity"))
    graph += _field(2, "g")
    for name, arr in outputs.items():
        arr = np.ascontiguousarray(arr, np.float32)
        tensor = b"".join(_field(1, d) for d in arr.shape) + _field(2, 1) + _field(8, f"{name}_const")
        graph += _field(5, tensor + _field(9, arr.tobytes()))
    graph += _field(11, _value_info(input_name, input_shape))
    for name, arr in outputs.items():
        graph += _field(12, _value_info(name, arr.shape))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 8) + _field(7, graph) + _field(8, opset)


def test_estimator_end_to_end_on_constant_onnx_models(tmp_path):
    pytest.importorskip("onnxruntime")
    det = _yolox_output_with_box(160, 120, 80, 160, ratio=2.0)
    sx = np.full((1, 133, 576), -1.0, np.float32)
    sy = np.full((1, 133, 768), -1.0, np.float32)
    sx[0, :, 288], sy[0, :, 384] = 0.8, 0.9  # every keypoint at the crop centre...
    sx[0, 5, 0], sy[0, 5, 0] = 2.0, 1.5  # ...except l_shoulder, at the crop's top-left corner (score clipped to 1)
    sx[0, 9, :] = -2.0  # l_wrist: no positive bin -> undetected
    (tmp_path / "yolox_l.onnx").write_bytes(_constant_model("images", (1, 3, 640, 640), {"output": det}))
    (tmp_path / "dw-ll_ucoco_384.onnx").write_bytes(
        _constant_model("input", (1, 3, 384, 288), {"simcc_x": sx, "simcc_y": sy})
    )
    est = dw.DWPoseEstimator(weights_dir=tmp_path)
    kps = est.process(np.zeros((240, 320, 3), np.uint8))
    assert kps.shape == (133, 3) and kps.dtype == np.float32
    np.testing.assert_allclose(kps[0], [160, 120, 0.8], atol=1e-5)  # box centre
    np.testing.assert_allclose(kps[5], [85, 20, 1.0], atol=1e-5)  # centre - scale / 2
    np.testing.assert_allclose(kps[9], [0, 0, 0])
    np.testing.assert_allclose(est.last_boxes[0, :4], [120, 40, 200, 200], atol=1e-3)
    assert len(est.timings["detector"]) == len(est.timings["pose"]) == 1
    # No person box -> None, and the pose model is not run.
    (tmp_path / "yolox_l.onnx").write_bytes(
        _constant_model("images", (1, 3, 640, 640), {"output": np.zeros((1, 8400, 85), np.float32)})
    )
    est = dw.DWPoseEstimator(weights_dir=tmp_path)
    assert est.process(np.zeros((240, 320, 3), np.uint8)) is None and est.timings["pose"] == []


def test_struct_sanity():
    assert _varint(300) == struct.pack("BB", 0xAC, 0x02)
