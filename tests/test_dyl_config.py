"""Dance-Your-Latents recipes: every recipe parses, overlays merge, bad keys and values fail naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dancegen.errors import InputError
from dancegen.methods.dance_your_latents.config import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "dance_your_latents"
FILES = sorted(RECIPES.glob("*.yaml"))


def test_recipe_folder_has_every_table_row():
    import yaml

    names = {p.stem for p in FILES}
    results = yaml.safe_load((RECIPES / "results.yml").read_text())
    rows = [r for t in results["tables"].values() for r in t["rows"].values()]
    listed = {r["recipe"] for r in rows if r["recipe"]}
    assert listed <= {p.name for p in FILES}
    assert len(rows) == 14 and {"t1_disco", "t1_vd", "t1_vd_sa", "t1_full", "stage1", "stage2", "tiny_synth"} <= names
    assert results["tables"]["table1"]["rows"]["vd_sa_mf"]["expected"]["fvd-disco"] == 334.81


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_recipe_parses(path):
    cfg = load_recipe(path)
    assert cfg.method == "dance-your-latents" and cfg.base is None
    assert cfg.train.selected_stages()


def test_overlays_change_only_their_rows():
    base = load_recipe(RECIPES / "tiktok_base.yaml")
    assert (base.model.variant, base.model.attention, base.model.subspace_size) == ("vd_sa_mf", "subspace", [4, 4, 4])
    assert [(s.name, s.lr, s.steps) for s in base.train.stages] == [("stsa_only", 2e-4, 50000),
                                                                     ("finetune", 2e-5, 20000)]
    t3 = load_recipe(RECIPES / "t3_844.yaml")  # t3_844 -> t1_vd_sa -> tiktok_base
    assert (t3.model.variant, t3.model.subspace_size) == ("vd_sa", [8, 4, 4])
    assert t3.inference == base.inference and t3.data == base.data
    cf = load_recipe(RECIPES / "t2_cf_first.yaml")
    assert cf.model.attention == "crossframe_first" and [s.name for s in cf.train.selected_stages()] == ["finetune"]
    disco = load_recipe(RECIPES / "t1_disco.yaml")
    assert disco.model.variant == "disco" and not disco.model.shared_noise.infer and disco.model.init_from is None
    over = load_recipe(RECIPES / "t1_full.yaml", ["model.subspace_size=[4,2,2]", "inference.steps=7"])
    assert over.model.subspace_size == [4, 2, 2] and over.inference.steps == 7


def test_unknown_key_names_key_and_file(tmp_path):
    (tmp_path / "base.yaml").write_text((RECIPES / "tiktok_base.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: base.yaml\nmodel:\n  subspace_sise: [2, 2, 2]\n")
    with pytest.raises(InputError) as e:
        load_recipe(bad)
    assert "subspace_sise" in str(e.value) and str(bad) in str(e.value)
    (tmp_path / "base.yaml").write_text("train:\n  lr_typo: 1\n")
    good = tmp_path / "good.yaml"
    good.write_text("base: base.yaml\nseed: 1\n")
    with pytest.raises(InputError) as e:  # the error points at the base file that holds the key
        load_recipe(good)
    assert "lr_typo" in str(e.value) and str(tmp_path / "base.yaml") in str(e.value)
    with pytest.raises(InputError, match="wrong type for 'model.shift'"):
        load_recipe(None, ["model.shift=maybe"])


@pytest.mark.parametrize("sets, match", [
    (["model.subspace_size=[4,4]"], "3 positive ints"),
    (["model.subspace_size=[4,0,4]"], "3 positive ints"),
    (["model.attention=temporal"], "vd_sa_mf .*needs attention subspace"),
    (["model.variant=vd", "model.attention=crossframe_all"], "ablation of the SA variant"),
    (["model.variant=nope"], "model.variant must be one of"),
    (["train.run=[stsa_only, nope]"], "does not define"),
    (["inference.overlap=16"], "overlap < window"),
    (["model.base=tiny", "model.tiny.pose_embedding_channels=[16,32,64]"], "pose_embedding_channels"),
    (["model.prediction_type=x0"], "prediction_type must be one of"),
    (["model.zero_terminal_snr=true"], "zero_terminal_snr needs model.prediction_type v_prediction"),
])
def test_post_init_validation(sets, match):
    with pytest.raises(InputError, match=match):
        load_recipe(None, sets)
