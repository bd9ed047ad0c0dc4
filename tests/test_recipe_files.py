"""Every YAML file under recipes/ and the bundled models' recipes are well formed: it parses and no mapping repeats a key.

PyYAML keeps the last of two equal keys without a word, so a botched edit of a results file can silently replace one
table with another; this loader refuses them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
FILES = sorted(p for d in (RECIPES, ROOT / "dancegen" / "assets") for pattern in ("*.yaml", "*.yml")
               for p in d.rglob(pattern))


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that raises on a key repeated within one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_unique(text: str):
    return yaml.load(text, Loader=UniqueKeyLoader)


def test_the_loader_refuses_a_repeated_key_and_accepts_the_same_key_in_two_mappings():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        load_unique("a: 1\nb: {c: 2}\na: 3\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'c'"):
        load_unique("b: {c: 2, c: 3}\n")
    assert load_unique("x: {a: 1}\ny: {a: 2}\n") == {"x": {"a": 1}, "y": {"a": 2}}


def test_there_are_recipe_files():
    assert len(FILES) > 50 and all(p.stat().st_size for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_every_recipe_file_parses_without_a_repeated_key(path):
    data = load_unique(path.read_text())
    assert isinstance(data, dict) and data


def test_edit_your_motion_results_keep_the_papers_tables_apart_from_the_toy_runs():
    """Table VI holds the paper's five rows only (a toy row once slipped into it under a broken comment)."""
    data = load_unique((RECIPES / "edit_your_motion" / "results.yml").read_text())
    assert set(data["table6_in_the_wild_vs_editing"]) == {"follow_your_pose", "motiondirector", "tune_a_video",
                                                           "motioneditor", "ours"}
    assert data["table4_ablation_in_the_wild"]["ours"]["psnr"] == 23.03
    assert {k for k in data if k.startswith("toy_scale")} >= {"toy_scale", "toy_scale_uncapped"}
