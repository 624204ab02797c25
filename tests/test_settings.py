"""One settings model: every setting of prune, svd, compress and heal is a dataclass field whose metadata holds its
flag's help; the command line is generated from those fields; the run functions take ``(model, config,
**settings)`` alike; the rules between settings hold from Python as from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

import lmshrink
from lmshrink.cli import build_parser
from lmshrink.cli.flags import config_from_args, flag_fields
from lmshrink.core import LmshrinkError
from lmshrink.pipeline.compress import CompressConfig
from lmshrink.pipeline.config import PruneConfig
from lmshrink.pipeline.heal_model import HealConfig
from lmshrink.pipeline.settings import flag_of
from lmshrink.pipeline.svd import SvdConfig

CONFIGS = {"prune": PruneConfig, "svd": SvdConfig, "compress": CompressConfig, "heal": HealConfig}
#: settings set from Python only (the command line always saves, verifies and uses the joint problem's solver)
PYTHON_ONLY = {"prune": {"save"}, "svd": {"save", "verify"}, "compress": {"save", "verify", "solver"},
               "heal": set()}
#: flags spelled otherwise than ``--field-name``, declared in the field's metadata
SPELLED = {"evaluate": "--no-eval", "progress": "--quiet", "solver_options": "--option",
           "objective_options": "--objective-option", "method_options": "--method-option",
           "heal_options": "--heal-option", "kd_options": "--heal-option"}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _minimal(command: str) -> list[str]:
    return [command, "pruned/model", "--out", "healed"] if command == "heal" else [command]


@pytest.mark.parametrize("command", list(CONFIGS))
def test_the_parser_has_a_flag_for_every_field_with_its_help(command):
    config, sub = CONFIGS[command], _subparser(command)
    actions = {a.dest: a for a in sub._actions}
    for field in dataclasses.fields(config):
        if field.name in PYTHON_ONLY[command]:
            assert flag_of(field) is None and field.name not in actions, field.name
            continue
        action = actions[field.name]
        assert action.option_strings == [SPELLED.get(field.name, f"--{field.name.replace('_', '-')}")]
        assert action.help == field.metadata["help"] and action.help, field.name
        assert action.choices == field.metadata["choices"], field.name
    assert {f.name for f in flag_fields(config)} == {f.name for f in dataclasses.fields(config)} - PYTHON_ONLY[command]


@pytest.mark.parametrize("command", list(CONFIGS))
def test_the_command_line_defaults_are_the_configs(command):
    args = build_parser().parse_args(_minimal(command))
    config = config_from_args(args, CONFIGS[command])
    expected = CONFIGS[command](out="healed") if command == "heal" else CONFIGS[command]()
    assert config.to_dict() == expected.to_dict()


def test_flags_spelled_otherwise_set_their_field():
    args = build_parser().parse_args(["prune", "--no-eval", "--quiet", "--remove", "25%", "--kinds", "moe,attention",
                                      "--option", "num_reads=4", "--heal", "kd", "--heal-option", "steps=3",
                                      "--eval-limit", "5"])
    config = config_from_args(args, PruneConfig)
    assert config.evaluate is False and config.progress is False
    assert config.remove == "25%" and config.kinds == ["moe", "attention"]
    assert config.solver_options == ["num_reads=4"]  # parsed against the solver when the run is checked
    assert config.heal == ["kd"] and config.heal_options == {"steps": 3}
    assert config.eval_limit == 5 and isinstance(config.eval_limit, int)
    heal = config_from_args(build_parser().parse_args(["heal", "m", "--out", "o", "--heal-option", "lr=0.01"]),
                            HealConfig)
    assert heal.kd_options == {"lr": 0.01} and heal.teacher is None


def test_option_strings_are_typed_by_the_request_stage():
    from lmshrink.pipeline.request import typed_plugin_options

    config = typed_plugin_options(PruneConfig(solver="anneal", solver_options=["num_reads=4"],
                                              objective_options=["first_order=true"]))
    assert config.solver_options == {"num_reads": 4} and config.objective_options == {"first_order": True}
    with pytest.raises(LmshrinkError, match="Did you mean 'num_reads'"):
        typed_plugin_options(PruneConfig(solver="anneal", solver_options=["num_read=4"]))


@pytest.mark.parametrize("config", list(CONFIGS.values()))
def test_keywords_replace_a_configs_fields(config):
    base = config(seed=3, samples=5)
    merged = config.from_settings(base, samples=7)
    assert (merged.seed, merged.samples) == (3, 7)
    assert base.samples == 5  # the config given is left as it was
    assert config.from_settings(None, samples=9) == config(samples=9)


@pytest.mark.parametrize("run, name", [(lmshrink.prune, "prune"), (lmshrink.svd_compress, "svd_compress"),
                                       (lmshrink.compress_model, "compress_model"),
                                       (lmshrink.heal_model, "heal_model")])
def test_an_unknown_keyword_is_refused_with_the_closest_setting(run, name):
    with pytest.raises(LmshrinkError, match=rf"^{name} has no setting 'sampels'\. Did you mean 'samples'\?"):
        run(None, None, sampels=8)


def test_a_config_of_another_run_is_refused():
    with pytest.raises(LmshrinkError, match="prune takes a PruneConfig, not a SvdConfig"):
        PruneConfig.from_settings(SvdConfig())


def test_solver_options_beside_a_method_are_refused_from_python(tmp_path):
    message = ("--option and --objective-option set the solver and the objective, which --method replaces; give the "
               "method's options with --method-option.")
    for options in ({"solver_options": {"num_reads": 4}}, {"objective_options": {"first_order": True}}):
        with pytest.raises(LmshrinkError, match=f"^{re.escape(message)}$"):
            PruneConfig(method="sleb", **options).check()
        with pytest.raises(LmshrinkError, match="which --method replaces"):
            lmshrink.prune(None, method="sleb", out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_the_configs_are_exported_from_lmshrink():
    assert lmshrink.PruneConfig is PruneConfig and lmshrink.SvdConfig is SvdConfig
    assert lmshrink.CompressConfig is CompressConfig and lmshrink.HealConfig is HealConfig
    assert issubclass(PruneConfig, lmshrink.RunSettings) and issubclass(HealConfig, lmshrink.PlacementSettings)
    assert {"PruneConfig", "SvdConfig", "CompressConfig", "HealConfig", "RunSettings"} <= set(lmshrink.__all__)


def test_svd_updates_are_the_sequential_whitenings():
    from lmshrink.compress.sequential import UPDATES
    from lmshrink.pipeline import svd

    assert svd.UPDATES == UPDATES


def test_heal_needs_an_output_directory():
    with pytest.raises(LmshrinkError, match="give an output directory"):
        HealConfig().check()


@pytest.mark.parametrize("config", list(CONFIGS.values()))
def test_the_shared_settings_are_checked_alike(config):
    given = {"out": "healed"} if config is HealConfig else {}
    with pytest.raises(LmshrinkError, match=r"^--samples must be at least 1, not 0\.$"):
        config(samples=0, **given).check()
    with pytest.raises(LmshrinkError, match=r"^--eval-window must be at least 2, not 1\.$"):
        config(eval_window=1, **given).check()


def test_a_value_outside_the_declared_choices_is_refused_from_python():
    with pytest.raises(LmshrinkError, match=r"^mode must be one of joint, removal, svd, not 'both'\.$"):
        CompressConfig(mode="both").check()
