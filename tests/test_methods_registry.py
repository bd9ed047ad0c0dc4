"""Method registry (house-style §2): every registered id resolves to its config, loader, pipeline and verbs."""

from __future__ import annotations

import dataclasses

import pytest

from dancegen.errors import InputError
from dancegen.registry import MethodSpec, available_methods, get_method, normalise_id, recipe_method

IDS = sorted(available_methods(plugins=False))


def test_registry_lists_dance_your_latents_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys, dancegen.registry as r; m = r.available_methods(); "
            "assert 'dance-your-latents' in m; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("method_id", IDS)
def test_every_registered_id_resolves(method_id):
    spec = get_method(method_id)
    assert isinstance(spec, MethodSpec) and spec.id == method_id == normalise_id(spec.id)
    cfg_cls = spec.load("config")
    assert dataclasses.is_dataclass(cfg_cls)
    cfg = spec.load("load_config")(None, [])
    assert isinstance(cfg, cfg_cls)
    if spec.pipeline:
        from diffusers import DiffusionPipeline

        assert issubclass(spec.load("pipeline"), DiffusionPipeline)
    for verb in spec.verbs:
        assert callable(spec.load(verb))


def test_ids_are_normalised_and_unknown_ids_fail():
    assert get_method("Dance_Your_Latents").id == "dance-your-latents"
    with pytest.raises(InputError, match="unknown method 'nope'.*dance-your-latents"):
        get_method("nope")
    with pytest.raises(InputError, match="has no 'finetune-oneshot'"):
        get_method("dance-your-latents").load("finetune-oneshot")


def test_recipe_method_follows_base_chain(tmp_path):
    (tmp_path / "base.yaml").write_text("method: dance_your_latents\nseed: 1\n")
    (tmp_path / "over.yaml").write_text("base: base.yaml\nseed: 2\n")
    (tmp_path / "none.yaml").write_text("seed: 3\n")
    assert recipe_method(tmp_path / "over.yaml") == "dance-your-latents"
    assert recipe_method(tmp_path / "none.yaml") is None
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(InputError, match="cycle"):
        recipe_method(tmp_path / "loop.yaml")
