"""The experiment scripts' guards against reusing the runs or world of another recipe."""

import json
import sys
from pathlib import Path

import pytest

from captioner.config import load_config, save_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import shapes_seeds  # noqa: E402


def _recipe(*overrides: str):
    return load_config(shapes_seeds.REPO / "configs/shapes.yaml", ["train.seed=1", *overrides])


def test_a_run_of_the_same_recipe_is_reused(tmp_path):
    save_config(_recipe("train.epochs=8"), tmp_path / "config.yaml")
    shapes_seeds.check_same_recipe(_recipe("train.epochs=8"), tmp_path, compare_model=True)


def test_a_run_without_a_saved_config_is_trained(tmp_path):
    shapes_seeds.check_same_recipe(_recipe(), tmp_path, compare_model=True)


def test_a_run_of_another_recipe_is_refused_naming_what_differs(tmp_path):
    save_config(_recipe("train.epochs=8", "model.attention_query=hidden"), tmp_path / "config.yaml")
    wanted = _recipe("train.epochs=5", "model.attention_query=hidden_and_word")
    with pytest.raises(SystemExit, match=r"train\.epochs: 8 there, 5 asked.*attention_query: 'hidden' there"):
        shapes_seeds.check_same_recipe(wanted, tmp_path, compare_model=True)


def test_a_second_stage_takes_its_model_from_its_start(tmp_path):
    """A self-critical run's model section is its cross-entropy checkpoint's, so only the model may differ."""
    save_config(_recipe("model.attention_query=hidden"), tmp_path / "config.yaml")
    shapes_seeds.check_same_recipe(_recipe("model.attention_query=hidden_and_word"), tmp_path, compare_model=False)
    save_config(_recipe("train.lr=1e-4"), tmp_path / "config.yaml")
    with pytest.raises(SystemExit, match=r"train\.lr"):
        shapes_seeds.check_same_recipe(_recipe(), tmp_path, compare_model=False)


def test_a_world_of_another_size_is_refused(tmp_path):
    (tmp_path / "dataset_shapes.json").write_text(json.dumps({"dataset": "shapes", "images": [{}] * 3}))
    shapes_seeds.check_world(str(tmp_path), 3)
    shapes_seeds.check_world(str(tmp_path / "not_made_yet"), 3)
    with pytest.raises(SystemExit, match="3 images, not the 4 asked for"):
        shapes_seeds.check_world(str(tmp_path), 4)
