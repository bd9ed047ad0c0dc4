"""`evaluate`: pairing, errors, report JSON/CSV with protocol, resume from cache, network metrics end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tests_helpers import save_tiny_clip

from dancegen.errors import InputError, MissingWeightsError
from dancegen.io.video import write_video
from dancegen.metrics import image
from dancegen.metrics.evaluate import evaluate, pair_inputs, table_rows


def _video(seed: int, n: int = 4, h: int = 64, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, h, w, 3))
    drift = rng.integers(-20, 20, (n, h, w, 3))
    return np.clip(base + drift, 0, 255).astype(np.uint8)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DANCEGEN_WEIGHTS_DIR", raising=False)
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    vids = {}
    for i, name in enumerate(["a", "b"]):
        g = _video(i)
        p = np.clip(g.astype(int) + np.random.default_rng(10 + i).integers(-30, 30, g.shape), 0, 255).astype(np.uint8)
        write_video(pred / name, p, fps=8)
        write_video(gt / name, g, fps=8)
        vids[name] = (p, g)
    return tmp_path, pred, gt, vids


def test_report_json_csv_carry_scores_and_protocol(dirs):
    tmp, pred, gt, vids = dirs
    out = tmp / "rep" / "report.json"
    rep = evaluate(["psnr", "psnr-disco", "l1-tiktok", "lpips", "fid"], pred, gt, out=out, random_weights=True,
                   fd_method="lowrank", max_frames=2)
    # per-video weight-free scores equal the metric functions on the same frames
    vids = {k: (p[:2], g[:2]) for k, (p, g) in vids.items()}
    for name, (p, g) in vids.items():
        assert rep["videos"][name]["scores"]["psnr"] == pytest.approx(image.psnr(p, g, mode="correct"))
        assert rep["videos"][name]["scores"]["psnr-disco"] == pytest.approx(image.psnr(p, g, mode="disco"))
        assert rep["videos"][name]["num_frames"] == 2 and rep["videos"][name]["size"] == [80, 64]
    m = rep["metrics"]
    assert m["psnr"]["value"] == pytest.approx(np.mean([image.psnr(p, g) for p, g in vids.values()]))
    assert m["lpips"]["value"] > 0 and m["fid"]["value"] is not None
    assert m["fid"]["feature_rows_pred"] == 4 and m["fid"]["kind"] == "set"
    assert m["fid"]["protocol"]["fd_method"] == "lowrank" and m["fid"]["protocol"]["fid_resize"] == "pytorch-fid"
    p = m["lpips"]["protocol"]
    assert p["num_videos"] == 2 and p["frames_total"] == 4 and p["mode"] == "lpips" and p["net"] == "alex"
    assert [b["name"] for b in p["backbones"]] == ["alexnet", "lpips-alex"]
    assert "random" in p["warning"] and p["dancegen_version"] == rep["dancegen_version"]
    on_disk = json.loads(out.read_text())
    assert on_disk["metrics"]["psnr"]["value"] == pytest.approx(m["psnr"]["value"])
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 5 + 4 * 2  # one ALL row per metric + per-video rows of the 4 per-video metrics
    psnr_all = next(r for r in rows if r["metric"] == "psnr" and r["video"] == "ALL")
    assert float(psnr_all["value"]) == pytest.approx(m["psnr"]["value"])
    assert psnr_all["num_videos"] == "2" and psnr_all["num_frames"] == "4" and psnr_all["dancegen_version"]
    assert [r["mode"] for r in rows if r["metric"] == "l1-tiktok"][0] == "tiktok"
    assert {r[0] for r in table_rows(rep)} == {"psnr", "psnr-disco", "l1-tiktok", "lpips", "fid"}


def test_resume_skips_finished_videos(dirs):
    tmp, pred, gt, _ = dirs
    out = tmp / "r.json"
    seen = []
    first = evaluate("psnr,lpips", pred, gt, out=out, random_weights=True,
                     progress=lambda v, m, s: seen.append((v, m, s)))
    assert {s for *_, s in seen} == {"done"}
    seen.clear()
    (tmp / "r.cache" / "lpips" / "b.npz").unlink()  # as if the run died while scoring b
    again = evaluate("psnr,lpips", pred, gt, out=out, random_weights=True,
                     progress=lambda v, m, s: seen.append((v, m, s)))
    assert sorted(seen) == [("a", "lpips", "cached"), ("a", "psnr", "cached"), ("b", "lpips", "done"),
                            ("b", "psnr", "cached")]
    assert again["metrics"]["lpips"]["value"] == pytest.approx(first["metrics"]["lpips"]["value"])
    assert again["videos"]["a"]["num_frames"] == 4  # protocol facts survive a fully cached video
    seen.clear()
    evaluate("psnr", pred, gt, out=out, random_weights=True, resize="72x64",
             progress=lambda v, m, s: seen.append(s))
    assert seen == ["done", "done"]  # a different protocol does not reuse the cache


def test_fvd_and_fid_vid_of_a_set_with_itself_is_zero(dirs):
    tmp, pred, _, _ = dirs
    for name in ("a", "b"):
        write_video(tmp / "v" / name, _video(ord(name), n=16, h=32, w=32), fps=8)
    rep = evaluate(["fvd"], tmp / "v", tmp / "v", random_weights=True)  # scipy sqrtm route, 400-d
    assert rep["metrics"]["fvd"]["feature_rows_pred"] == 2
    assert abs(rep["metrics"]["fvd"]["value"]) < 1e-3
    vid = evaluate(["fid-vid", "fvd-disco"], tmp / "v", tmp / "v", random_weights=True, fd_method="lowrank")
    assert abs(vid["metrics"]["fid-vid"]["value"]) < 1e-3 and abs(vid["metrics"]["fvd-disco"]["value"]) < 1e-3
    assert vid["metrics"]["fid-vid"]["feature_rows_pred"] == 2  # one row per video (mean over segments)
    assert rep["metrics"]["fvd"]["protocol"]["clips"] == "first"
    assert rep["metrics"]["fvd"]["protocol"]["fvd_resize"] == "stretch"


def test_input_errors(dirs):
    tmp, pred, gt, _ = dirs
    with pytest.raises(InputError, match="unknown metric.*known: .*psnr"):
        evaluate("psnr,nope", pred, gt)
    with pytest.raises(InputError, match="ground truth"):
        evaluate("ssim", pred)
    write_video(tmp / "short" / "a", _video(0, n=3), fps=8)
    with pytest.raises(InputError, match=r"frame counts differ: .*pred/a has 4.*short/a has 3"):
        evaluate("psnr", pred / "a", tmp / "short" / "a")
    rep = evaluate("psnr", pred / "a", tmp / "short" / "a", frames="min")
    assert rep["videos"]["a"]["num_frames"] == 3 and rep["metrics"]["psnr"]["protocol"]["frames_policy"] == "min"
    write_video(tmp / "big" / "a", _video(0, n=4, h=96, w=120), fps=8)
    with pytest.raises(InputError, match="frame sizes differ.*--resize"):
        evaluate("mse", pred / "a", tmp / "big" / "a")
    assert evaluate("mse", pred / "a", tmp / "big" / "a", resize="80x64")["videos"]["a"]["size"] == [80, 64]


def test_missing_backbone_weights_is_a_clear_error(dirs):
    _, pred, gt, _ = dirs
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth.*download.pytorch.org"):
        evaluate("lpips", pred, gt)


def test_lowrank_frechet_equals_covariance_route():
    from dancegen.metrics.evaluate import frechet_distance_lowrank
    from dancegen.metrics.frechet import feature_stats, frechet_distance

    rng = np.random.default_rng(0)
    for n1, n2, d in [(5, 7, 40), (60, 50, 12)]:  # fewer rows than dims (singular covariances) and more
        x, y = rng.normal(size=(n1, d)), rng.normal(1.0, 2.0, size=(n2, d))
        ref = frechet_distance(*feature_stats(x), *feature_stats(y), method="eig")
        assert frechet_distance_lowrank(x, y) == pytest.approx(ref, rel=1e-7)
        assert frechet_distance_lowrank(x, x) == pytest.approx(0.0, abs=1e-9)


def test_pairing_by_name_and_single_pair(dirs):
    tmp, pred, gt, _ = dirs
    assert [(k, p.name, g.name) for k, p, g in pair_inputs(pred, gt)] == [("a", "a", "a"), ("b", "b", "b")]
    assert pair_inputs(pred / "a", gt / "b")[0][0] == "a"  # one video on each side pairs regardless of name
    write_video(tmp / "gt2" / "a", _video(0), fps=8)
    write_video(tmp / "gt2" / "z", _video(0), fps=8)
    with pytest.raises(InputError, match="no ground truth named like 1 prediction.*b"):
        pair_inputs(pred, tmp / "gt2", require_gt=True)


def test_clip_text_and_frame_scores(dirs):
    tmp, pred, _, _ = dirs
    save_tiny_clip(tmp / "clip")
    still = np.repeat(_video(3, n=1), 3, axis=0)
    write_video(tmp / "still" / "s", still, fps=8)
    rep = evaluate(["clip-frame", "clip-text"], tmp / "still", prompt="a dancer", clip_model=str(tmp / "clip"))
    assert rep["metrics"]["clip-frame"]["value"] == pytest.approx(100.0, abs=1e-3)  # identical frames
    assert -100 <= rep["metrics"]["clip-text"]["value"] <= 100
    assert rep["metrics"]["clip-text"]["protocol"]["backbones"][0]["sha256"]
    moving = evaluate(["clip-frame"], pred, clip_model=str(tmp / "clip"))["metrics"]["clip-frame"]["value"]
    assert moving < 100.0
    with pytest.raises(MissingWeightsError, match="not available locally"):
        evaluate(["clip-frame"], pred, clip_model=str(tmp / "nope"))


def test_random_init_backbones_leave_the_global_rng_alone(dirs, monkeypatch):
    """house-style §6: a random-init backbone is seeded locally. The caller's torch RNG state is the same after
    `evaluate`, no generator is reseeded globally (CPU or CUDA), and the score is that of the same network built
    right after `torch.manual_seed(0)` (the numbers the earlier global reseeding gave)."""
    import torch

    from dancegen.metrics.backbones import features as ft

    _, pred, gt, vids = dirs
    torch.manual_seed(1234)
    torch.rand(3)  # some caller state that is not a fresh seed
    before = torch.get_rng_state()
    reseeds = []
    monkeypatch.setattr(torch, "manual_seed", lambda seed: reseeds.append(("torch", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeds.append(("cuda", seed)))
    rep = evaluate(["lpips"], pred, gt, random_weights=True)
    assert torch.equal(torch.get_rng_state(), before)
    assert reseeds == []
    monkeypatch.undo()
    torch.manual_seed(0)
    net = ft.LPIPSScorer("alex", None, None, "cpu", "[-1,1]")
    want = np.mean([np.mean(net(p, g)) for p, g in vids.values()])
    assert rep["metrics"]["lpips"]["value"] == pytest.approx(want, rel=1e-5)


def test_body_and_background_clip_see_only_their_region(dirs):
    """Dancing Avatar's Body / Background CLIP (spec §4 items 12-13): frames that change only inside the person mask
    keep Background CLIP at exactly 100 and lower Body CLIP; a change only outside does the opposite."""
    from dancegen.metrics.backbones.clip import ClipEmbedder, _square, clip_adjacent_similarity

    tmp = dirs[0]
    save_tiny_clip(tmp / "clip")
    rng = np.random.default_rng(5)
    room = rng.integers(0, 256, (1, 40, 48, 3)).repeat(3, axis=0).astype(np.uint8)
    masks = np.zeros((3, 40, 48), bool)
    masks[:, 8:36, 18:30] = True  # a tall "dancer"
    moving_body = room.copy()
    moving_body[masks] = rng.integers(0, 256, (int(masks.sum()), 3))
    moving_room = rng.integers(0, 256, room.shape).astype(np.uint8)
    moving_room[masks] = room[masks]
    emb = ClipEmbedder(tmp / "clip")
    for video, changed, still in ((moving_body, "body", "background"), (moving_room, "background", "body")):
        assert clip_adjacent_similarity(emb, video, masks, still) == pytest.approx(100.0, abs=1e-3)
        assert clip_adjacent_similarity(emb, video, masks, changed) < 100.0 - 1e-3
    # the body image is the mask's bounding box, padded to a square (CLIP's centre crop would cut a tall crop)
    body = _square(moving_body[0][8:36, 18:30].astype(float), np.zeros(3))
    assert body.shape == (28, 28, 3) and (body[:, :8] == 0).all()
    assert (body[:, 8:20] == moving_body[0][8:36, 18:30]).all()
    # through evaluate, with the masks given as an array
    rep = evaluate(["clip-frame-body", "clip-frame-background"], tmp / "pred", clip_model=str(tmp / "clip"),
                   masks=np.zeros((4, 64, 80), bool) | (np.arange(80) < 40)[None, None])
    for name in ("clip-frame-body", "clip-frame-background"):
        assert rep["metrics"][name]["protocol"]["region"] in name and -100 <= rep["metrics"][name]["value"] <= 100


def test_pose_mse_and_pose_map_mse_through_evaluate(tmp_path):
    """Dancing Avatar's Pose MSE (coordinates) and its pose-map variant: 0 when the output's poses are the driving
    ones, positive against another clip's poses; without --poses one line naming both."""
    from dancegen import api

    api.synth(tmp_path, num_clips=2, size=(64, 64), num_frames=4, fps=8.0, seed=3, camera="static", flow=False)
    a, b = sorted(p for p in tmp_path.iterdir() if (p / "openpose_json").is_dir())
    same = evaluate(["pose-mse", "pose-map-mse"], a / "video.mp4", poses=a / "openpose_json",
                    pred_poses=a / "openpose_json")["metrics"]
    other = evaluate(["pose-mse", "pose-map-mse"], a / "video.mp4", poses=b / "openpose_json",
                     pred_poses=a / "openpose_json")["metrics"]
    for name in ("pose-mse", "pose-map-mse"):
        assert same[name]["value"] == 0.0 and other[name]["value"] > 0.0
    with pytest.raises(InputError, match="pose-map-mse need the driving poses"):
        evaluate(["pose-map-mse"], a / "video.mp4", pred_poses=a / "openpose_json")
