"""params.yaml validation: unknown keys, wrong types, out-of-range values, YAML problems."""

import pytest
import yaml

from cxrprune.core.config import Params, from_dict, load_params
from cxrprune.core.errors import ConfigError


def test_repository_params_file_is_valid():
    params = load_params("params.yaml")
    assert isinstance(params, Params)
    assert len(params.prune.levels) == 20 and params.prune.levels[0] == 0.0
    assert len(params.seeds) >= 5
    assert params.evaluate.margin == 0.05 and params.analyze.class_tolerance == 0.05  # the non-inferiority margins


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown key trian"),
    ({"train": {"lr": "fast"}}, "train.lr must be a finite number"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
    ({"train": {"epochs": True}}, "train.epochs must be an integer"),
    ({"train": {"arch": "vgg16"}}, "train.arch must be one of"),
    ({"train": {"lr": -1.0}}, "train.lr must be a positive number"),
    ({"prune": {"levels": [0.0, 1.0]}}, "prune.levels must be sparsities in [0, 1)"),
    ({"prune": {"levels": [0.0, -0.1]}}, "prune.levels must be sparsities in [0, 1)"),
    ({"prune": {"levels": [0.1, 0.5]}}, "contains 0"),
    ({"prune": {"levels": [0.0, 0.5, 0.3]}}, "strictly increasing"),
    ({"prune": {"methods": ["magnitude"]}}, "prune.methods[0] must be one of l1, random"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": [1, 1]}, "no duplicates"),
    ({"seeds": "0"}, "seeds must be a list"),
    ({"data": {"image_size": 16}}, "data.image_size must be an integer >= 32"),
    ({"data": "x"}, "data must be a mapping"),
    ({"analyze": {"pie_sparsity": 0.42}}, "analyze.pie_sparsity must be one of prune.levels"),
    ({"train": {"hflip": "yes"}}, "train.hflip must be true or false"),
    ({"evaluate": {"margin": 0.0}}, "evaluate.margin must be a relative mAP loss in (0, 1)"),
    ({"evaluate": {"margin": 1.0}}, "evaluate.margin must be a relative mAP loss in (0, 1)"),
    ({"analyze": {"class_tolerance": 1.5}}, "analyze.class_tolerance must be a relative AP loss in (0, 1)"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert message in str(err.value)


def test_yaml_float_without_dot_is_accepted():
    assert from_dict(yaml.safe_load("train:\n  lr: 1e-4\n")).train.lr == pytest.approx(1e-4)


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_params(path)


def test_missing_and_broken_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()
