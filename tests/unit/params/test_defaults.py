"""One place for defaults: params.yaml states exactly the dataclass defaults, and they validate."""

from __future__ import annotations

import yaml
from support import ROOT

from reidpipe.params import Params, load_params, params_from_dict, params_to_dict


def leaf_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "backbone_kwargs":
            keys |= leaf_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def test_defaults_validate_and_round_trip():
    defaults = Params()
    assert params_from_dict(params_to_dict(defaults)) == defaults


def test_params_yaml_holds_the_dataclass_defaults():
    """Equal, but for data.dataset_dir: DVC interpolates it into paths, so params.yaml states the
    folder the default '' resolves to."""
    stated = load_params([ROOT / "params.yaml"])
    defaults = Params()
    assert stated.data.dataset_dir == defaults.source(defaults.data.source).dataset_dir
    stated.data.dataset_dir = defaults.data.dataset_dir
    assert params_to_dict(stated) == params_to_dict(defaults)


def test_params_yaml_lists_every_key():
    """Every setting appears in params.yaml (the file users read), recipes aside."""
    stated = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = params_to_dict(Params())
    stated.pop("archs"), defaults.pop("archs")
    assert leaf_keys(stated) == leaf_keys(defaults)


def test_strict_validation_is_on_for_market_and_off_in_the_demo():
    assert Params().data.strict is True
    demo = load_params([ROOT / "params.yaml", ROOT / "config" / "demo.yaml"])
    assert demo.data.strict is False and demo.data.source == "synthetic"
