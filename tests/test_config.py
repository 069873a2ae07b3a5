from pathlib import Path

import pytest

from captioner.config import Config, ConfigError, load_config, save_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_overrides_are_typed_and_nested():
    config = load_config(None, ["model.decoder_dim=256", "train.epochs=3", "train.lr=1e-3",
                                "data.split_file=/x/dataset_coco.json", "model.encoder.backbone=resnet50"])
    assert config.model.decoder_dim == 256 and config.train.epochs == 3 and config.train.lr == 1e-3
    assert config.data.split_file == "/x/dataset_coco.json"
    assert config.model.encoder.backbone == "resnet50"
    assert load_config(None, ["data.split_file=null"]).data.split_file is None


def test_unknown_key_is_rejected_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="model.decoder_dimm"):
        load_config(None, ["model.decoder_dimm=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(path)


def test_wrong_type_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="model.deep_output"):
        load_config(None, ["model.deep_output=1"])
    with pytest.raises(ConfigError, match="model.encoder"):
        load_config(None, ["model.encoder=5"])


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(None, ["train.epochs=7", "output_dir=somewhere"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
