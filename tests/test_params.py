"""The presets: the field's baseline detectors as params blocks, each valid, each a complete recipe in
one place, applied like any override (check-params, train, dvc exp run -S)."""

import pytest

from deepfake.__main__ import main
from deepfake.core import config, paths
from deepfake.core.config import ConfigError
from deepfake.pipeline.params import load_params, preset_flags, preset_names, preset_overrides

RAW = config.read_yaml(paths.PARAMS_FILE)


def test_the_presets_are_the_field_s_baselines_each_a_complete_valid_recipe():
    assert preset_names() == ("xception", "efficientnet_b4", "resnet18")
    keys = {tuple(sorted(preset_overrides(n)["train"])) for n in preset_names()}
    assert len(keys) == 1, "every preset sets the same keys: switching presets leaves nothing behind"
    for name in preset_names():
        p = load_params(preset=name)  # every value valid with the project's params.yaml
        assert p.preprocess.size == p.train.image_size, f"{name}: the crops are made at the network's input size"
        assert {"arch", "image_size", "optimizer", "lr", "schedule", "epochs"} <= set(preset_overrides(name)["train"])
    xc, eb4 = load_params(preset="xception").train, load_params(preset="efficientnet_b4").train
    want = ("legacy_xception", 299, 2e-4, 3, 18)
    assert (xc.arch, xc.image_size, xc.lr, xc.freeze_backbone_epochs, xc.epochs) == want
    assert (eb4.arch, eb4.image_size, eb4.optimizer, eb4.momentum, eb4.lr, eb4.schedule, eb4.epochs) == (
        "efficientnet_b4",
        380,
        "sgd",
        0.9,
        1e-3,
        "linear",
        100,
    )


def test_the_resnet18_preset_is_the_default_run():
    for section, values in preset_overrides("resnet18").items():
        for key, value in values.items():
            assert RAW[section][key] == value, f"presets.yaml resnet18 {section}.{key} differs from params.yaml"


def test_a_preset_is_applied_before_overrides_and_an_unknown_one_is_named():
    p = load_params(preset="xception", overrides={"train": {"epochs": 2}})
    assert p.train.arch == "legacy_xception" and p.train.epochs == 2
    with pytest.raises(ConfigError, match=r"unknown preset 'xceptoin' \(did you mean xception\?\)"):
        load_params(preset="xceptoin")
    assert preset_flags("xception")[:2] == ["preprocess.size=299", "train.arch=legacy_xception"]


def test_the_preset_command_prints_the_dvc_experiment(capsys):
    assert main(["preset"]) == 0
    listing = capsys.readouterr().out
    assert "xception         legacy_xception at 299 px" in listing and "efficientnet_b4" in listing
    assert main(["preset", "efficientnet_b4"]) == 0
    out = capsys.readouterr().out
    assert "dvc exp run -n efficientnet_b4 -S preprocess.size=380 -S train.arch=efficientnet_b4" in out
    assert "-S train.optimizer=sgd" in out and "-S train.schedule=linear" in out
    assert main(["check-params", "--preset", "xception"]) == 0
    assert "valid with preset xception" in capsys.readouterr().out
    assert main(["preset", "nope"]) == 2
