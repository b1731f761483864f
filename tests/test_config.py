"""RunConfig: flags and YAML keys from one set of fields, validation with clear sentences."""
from __future__ import annotations

import pytest
import yaml

from tunesmith.cli import build_parser, config_from_args, main
from tunesmith.config import SECTIONS, RunConfig, fields_of
from tunesmith.errors import TunesmithError


def test_every_field_is_a_flag_and_a_yaml_key():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    saved = RunConfig().to_dict()
    for section, cls in SECTIONS.items():
        for name, f in fields_of(cls).items():
            assert name in saved[section]
            if f.metadata.get("cli", True):
                assert "--" + name.replace("_", "-") in help_text, name


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"data": "x.csv"}, "train": {"lr": 1e-4, "epochs": 2}}))
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "5"])
    cfg = config_from_args(args)
    assert cfg.train.lr == 1e-4 and cfg.train.epochs == 5 and cfg.data.data == "x.csv"


def test_yaml_round_trip():
    cfg = RunConfig.from_dict({"data": "a.csv", "method": "full", "lr": 2e-5, "val_fraction": 0.2})
    again = RunConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("values, words", [
    ({"lr": -1}, "--lr is out of range"),
    ({"val_fraction": 0.9}, "--val-fraction is out of range"),
    ({"batch_size": 30, "grad_accum": 4}, "not a multiple"),
    ({"precision": "fp8"}, "--precision must be one of"),
    ({"epochs": "many"}, "--epochs must be float"),
])
def test_bad_values_are_one_clear_sentence(values, words):
    with pytest.raises(TunesmithError, match=words):
        RunConfig.from_dict(values).validate()


def test_unknown_yaml_key_suggests_the_close_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(TunesmithError, match="Unknown option 'learning_rat'"):
        RunConfig.from_yaml(path)
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(TunesmithError, match="Did you mean 'epochs'"):
        RunConfig.from_yaml(path)


def test_print_config_shows_the_resolved_config(capsys):
    assert main(["train", "rotten-tomatoes", "--lr", "3e-5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 3e-5 and printed["data"]["data"] == "rotten-tomatoes"


def test_each_method_has_its_own_default_learning_rate_unless_lr_is_given(tmp_path):
    from tunesmith.compare import method_config
    from tunesmith.methods import METHODS, resolve_learning_rate

    assert resolve_learning_rate(RunConfig.from_dict({"method": "full"})).train.lr == 5e-5
    assert resolve_learning_rate(RunConfig.from_dict({"method": "lora"})).train.lr == METHODS["lora"].lr > 1e-4
    assert resolve_learning_rate(RunConfig.from_dict({"method": "lora", "lr": 2e-4})).train.lr == 2e-4
    base = RunConfig.from_dict({"data": "x.csv"}).validate()
    assert base.train.lr is None
    head = method_config(base, "head", {}, tmp_path / "head")
    assert head.train.lr is None  # resolved by the run once the model is built: its family may have its own default
    assert resolve_learning_rate(head).train.lr == METHODS["head"].lr
    assert method_config(base, "head", {"lr": "1e-2"}, tmp_path / "head").train.lr == 1e-2
    assert base.train.lr is None  # the shared base keeps no method's value
