"""Every registered method, end to end at toy size (nerfstudio's smoke test): its recipes parse, a shrunk config
(`MethodSpec.smoke`) trains every stage for 2 steps on synthetic data, and the trained run folder generates a 2-frame
video through `dancegen.api` with the method chosen from the folder (no --method given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dancegen.registry import available_methods, get_method

ROOT = Path(__file__).resolve().parents[1]
IDS = sorted(available_methods(plugins=False))


def recipes_of(method_id: str) -> list[Path]:
    return sorted((ROOT / "recipes" / method_id.replace("-", "_")).glob("*.yaml"))


@pytest.mark.parametrize("method_id", IDS)
def test_every_recipe_of_the_method_parses_into_its_config(method_id):
    spec = get_method(method_id)
    cls, load = spec.load("config"), spec.load("load_config")
    recipes = recipes_of(method_id)
    assert recipes, f"no recipes/{method_id.replace('-', '_')}/*.yaml"
    for path in recipes:
        assert isinstance(load(path, []), cls), path


def _inputs(verb: str, data: Path, out: Path) -> dict:
    """The arguments of `verb` from the synthetic world the smoke run rendered into `data`."""
    if verb == "animate":
        clip = next(p for p in sorted(data.iterdir()) if (p / "openpose_json").is_dir())
        return {"ref": clip / "images" / "0000.png", "poses": clip / "openpose_json", "out": out / "anim.mp4",
                "frames": 2, "steps": 2, "retarget": False, "ref_mask": None, "preview": False}
    if verb == "music2dance":
        from dancegen.io.video import read_video, write_image

        video = next(data.rglob("*.mp4"))
        write_image(out / "ref.png", read_video(video).frames[0])
        return {"song": next(data.rglob("*.wav")), "ref": out / "ref.png", "out": out / "m2d.mp4", "seconds": 0.3,
                "steps": 2}
    if verb == "text2character":
        return {"prompt": "a dancer in a red t-shirt", "motion": "a person jumps", "out": out / "t2c.mp4",
                "frames": 3, "steps": 2, "preview": False}
    raise AssertionError(f"the smoke test does not know how to call {verb!r}: add it to _inputs")


@pytest.mark.parametrize("method_id", IDS)
def test_a_shrunk_method_trains_two_steps_and_generates_two_frames(method_id, tmp_path):
    from dancegen import api
    from dancegen.io.video import read_video, read_video_metadata
    from dancegen.requests import VERB_REQUESTS

    spec = get_method(method_id)
    assert spec.smoke, f"{method_id} declares no smoke overrides (MethodSpec.smoke)"
    data = tmp_path / "data"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"method: {method_id}\n")
    run = tmp_path / "run"
    if "finetune-oneshot" in spec.verbs:  # one-shot: fine-tune on one synthetic clip, then edit it
        api.synth(data, num_clips=1, size=(64, 64), num_frames=6, fps=8.0, seed=0, camera="static", flow=False)
        clip = next(p for p in sorted(data.iterdir()) if (p / "openpose_json").is_dir())
        report = api.finetune_oneshot(clip / "video.mp4", "a dancer", run, method=method_id,
                                      poses=clip / "openpose_json", overrides=list(spec.smoke), recipe=recipe)
        assert all(r["steps"] == 2 for r in report["stages"].values())
        rep = api.animate(None, clip / "openpose_json", tmp_path / "edit.mp4", model=str(run), steps=2)
        assert rep["method"] == method_id  # chosen from the run folder's recipe
        video = read_video(tmp_path / "edit.mp4").frames
        assert read_video_metadata(tmp_path / "edit.mp4")["method"] == method_id
        assert video.shape[0] == 4 and video.std() > 0
        return
    if "train" not in spec.verbs:  # zero-shot: the bundled models generate with the smoke overrides
        for verb in spec.verbs:
            kw = _inputs(verb, data, tmp_path)
            rep = getattr(api, verb)(kw.pop("prompt"), kw.pop("out"), overrides=list(spec.smoke), **kw)
            assert rep["method"] == method_id
            assert read_video(rep["output"]).frames.std() > 0
            assert read_video_metadata(rep["output"])["method"] == method_id
        return
    report = api.train(recipe, overrides=[s.replace("{data}", str(data)) for s in spec.smoke], out=run)
    assert report["stages"] and all(r.get("steps") == 2 for r in report["stages"].values() if "skipped" not in r)
    verbs = [v for v in spec.verbs if v in VERB_REQUESTS]
    assert verbs, f"{method_id} has no generating verb"
    for verb in verbs:
        kw = _inputs(verb, data, tmp_path)
        out = kw.pop("out")
        if verb == "music2dance":
            args = [kw.pop(k) for k in ("song", "ref") if k in kw]
        elif verb == "text2character":
            args = [kw.pop("prompt")]
        else:
            args = [kw.pop("ref"), kw.pop("poses")]
        rep = getattr(api, verb)(*args, out, model=str(run), **kw)
        assert rep["method"] == method_id  # chosen from the run folder's recipe
        video = read_video(out).frames
        assert read_video_metadata(out)["method"] == method_id  # provenance in the container
        assert video.shape[0] >= 2 and video.dtype == np.uint8 and video.std() > 0
