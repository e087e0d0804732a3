"""params.yaml is the one source of every setting; every fault in it is named before work starts."""

import pytest
import yaml

from deepfake.core import config, paths
from deepfake.core.config import ConfigError
from deepfake.data.split import SplitConfig
from deepfake.evaluation.evaluate import EvalConfig
from deepfake.pipeline.params import load_params
from deepfake.pipeline.quick import write_params
from deepfake.training.train import TrainConfig

RAW = config.read_yaml(paths.PARAMS_FILE)

# For every section: a misspelled key, an extra key, a value of the wrong type and one out of range.
FAULTS = {
    "base": [("sed", 1), ("colour", "red"), ("seed", "zero"), ("seed", -1)],
    "data": [("raw_dri", "x"), ("extra", 1), ("raw_dir", 3), ("faces_dir", " ")],
    "synth": [("n_identites", 4), ("style", "x"), ("image_size", "big"), ("n_identities", 1)],
    "preprocess": [("detcet", True), ("colour", 1), ("detect", "yes"), ("margin", 0.5)],
    "split": [("val_fraq", 0.1), ("stratify", True), ("dedupe", 1), ("test_frac", 0.7)],
    "train": [("learning_rate", 1e-3), ("dropout", 0.1), ("epochs", "ten"), ("image_size", 0)],
    "evaluate": [("bootstrapp", 10), ("other", 1), ("calibrate", "no"), ("ci_level", 1.5)],
}


@pytest.mark.parametrize(
    "section, key, value, kind",
    [
        (s, k, v, kind)
        for s, cases in FAULTS.items()
        for (k, v), kind in zip(cases, ("misspelled", "extra", "type", "range"))
    ],
)
def test_every_fault_in_every_section_names_the_key(tmp_path, section, key, value, kind):
    params = write_params(tmp_path / "params.yaml", {section: {key: value}})
    with pytest.raises(ConfigError) as e:
        load_params(params)
    msg = str(e.value)
    assert f"{section}.{key}" in msg and str(params) in msg
    if kind == "misspelled" and section not in ("data",):
        assert "did you mean" in msg
    if kind in ("type", "range"):
        assert repr(value) in msg and "expected" in msg or "empty" in msg


def test_missing_keys_and_sections_are_named(tmp_path):
    values = dict(RAW)
    values["train"] = {k: v for k, v in RAW["train"].items() if k != "lr"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=r"train\.lr missing"):
        load_params(tmp_path / "p.yaml")
    del values["split"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="section split is missing"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**RAW, "trian": {}}))
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['trian'\]"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")


def test_cross_field_rules_and_cross_dataset_names(tmp_path):
    with pytest.raises(ConfigError, match="jpeg_quality_min .* must not exceed"):
        load_params(write_params(tmp_path / "a.yaml", {"train": {"jpeg_quality_min": 90, "jpeg_quality_max": 60}}))
    with pytest.raises(ConfigError, match="cross_dataset name 'a b'"):
        load_params(write_params(tmp_path / "b.yaml", {"cross_dataset": {"a b": "x"}}))


def test_defaults_are_params_yaml_and_written_once():
    """A config built without arguments is params.yaml's section, base keys from ``base``."""
    train = TrainConfig()
    assert train.epochs == RAW["train"]["epochs"] and train.image_size == RAW["train"]["image_size"]
    assert train.seed == RAW["base"]["seed"] and train.device == RAW["base"]["device"]
    assert EvalConfig().bootstrap == RAW["evaluate"]["bootstrap"]
    assert SplitConfig(val_frac=0.2).val_frac == 0.2
    assert config.settings_of(TrainConfig) == list(RAW["train"]) + ["device", "seed"] or set(
        config.settings_of(TrainConfig)
    ) == set(RAW["train"]) | {"device", "seed"}
    for cls in (TrainConfig, EvalConfig, SplitConfig):
        section = RAW[cls.SECTION]
        assert set(config.settings_of(cls)) - set(cls.BASE_KEYS) == set(section), cls


def test_values_are_checked_and_normalised_however_the_config_is_built():
    with pytest.raises(ConfigError, match=r"train\.epochs = 'ten' is str; expected an integer"):
        TrainConfig(epochs="ten")
    with pytest.raises(ConfigError, match=r"train\.schedule = 'cosin' .* \(did you mean 'cosine'\?\)"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ConfigError, match=r"base\.seed"):
        TrainConfig(seed=True)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert config.build(SplitConfig, {"val_frac": 0.1}, base={"seed": 4}) == SplitConfig(val_frac=0.1, seed=4)
    with pytest.raises(ConfigError, match=r"split\.tset_frac \(did you mean split\.test_frac\?\)"):
        config.build(SplitConfig, {"tset_frac": 0.1})


def test_overrides_from_the_command_line():
    assert config.override_pairs(["train.epochs=2", "base.device=cpu"]) == {
        "train": {"epochs": 2},
        "base": {"device": "cpu"},
    }
    with pytest.raises(ConfigError, match="section.key=value"):
        config.override_pairs(["epochs=2"])
    assert load_params(overrides={"train": {"epochs": 2}}).train.epochs == 2


def test_code_only_options_and_base_keys_do_not_belong_in_a_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) train\.max_batches"):
        load_params(write_params(tmp_path / "a.yaml", {"train": {"max_batches": 2}}))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) split\.seed; the split section takes val_frac"):
        load_params(write_params(tmp_path / "b.yaml", {"split": {"seed": 3}}))  # the seed lives in base


def test_an_unknown_arch_fails_check_params_in_seconds_with_the_closest_names(tmp_path, capsys):
    import time

    from deepfake.__main__ import main

    params = write_params(tmp_path / "params.yaml", {"train": {"arch": "efficentnet_b0"}})
    t0 = time.perf_counter()
    assert main(["check-params", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - t0 < 15
    assert str(params) in err and "train.arch = 'efficentnet_b0'" in err and "did you mean efficientnet_b0" in err
    good = write_params(tmp_path / "good.yaml", {"train": {"arch": "efficientnet_b4.ra2_in1k"}})
    assert main(["check-params", "--params", str(good)]) == 0
