"""Each job has one set of defaults: the CLI, the flow (and so prefect.yaml's deployments) and the job's
config dataclass agree on every parameter they share, and every CLI option reaches the flow."""

from __future__ import annotations

import inspect
import re

import pytest
import typer
import yaml

import flows.evaluate
import flows.generate
import flows.preprocess
import flows.train
from imagineid.cli import app
from imagineid.generation.config import GenerateConfig
from imagineid.preprocessing.config import PreprocessConfig
from imagineid.training.config import TrainConfig

JOBS = {
    "preprocess": (flows.preprocess.preprocess_flow, PreprocessConfig),
    "train": (flows.train.train_flow, TrainConfig),
    "generate": (flows.generate.generate_flow, GenerateConfig),
    "evaluate": (flows.evaluate.evaluate_flow, None),
}
# CLI options with another name or meaning in the flow: the CLI's positional `src` is the flow's `sources`;
# `--no-ray` is `use_ray`; `--content-from` is a CLI convenience for a second audio list; `--config` (a
# file) is the flow's `config` (a mapping), and train's `--set` its `overrides`.
CLI_ONLY = {
    "preprocess": {"src", "config_file"},
    "train": {"no_ray", "config_file", "overrides"},
    "generate": {"no_ray", "content_from", "config_file"},
    "evaluate": set(),
}


def cli_defaults(job: str) -> dict:
    command = typer.main.get_command(app).commands[job]
    return {p.name: p.default for p in command.params if not p.required}


def flow_defaults(job: str) -> dict:
    flow, _ = JOBS[job]
    return {k: v.default for k, v in inspect.signature(flow.fn).parameters.items() if v.default is not inspect._empty}


@pytest.mark.parametrize("job", JOBS)
def test_cli_flow_and_config_defaults_agree(job: str) -> None:
    cli, flow = cli_defaults(job), flow_defaults(job)
    shared = (set(cli) & set(flow)) - CLI_ONLY[job]
    nothing = {"[]": None}  # a repeatable CLI option's empty list is a flow's None (no mutable defaults)
    assert {k: nothing.get(repr(cli[k]), cli[k]) for k in shared} == {k: flow[k] for k in shared}
    config = JOBS[job][1]
    if config is not None:
        import dataclasses

        fields = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
        for name in shared & set(fields):
            assert flow[name] == fields[name], (job, name, flow[name], fields[name])


@pytest.mark.parametrize("job", JOBS)
def test_every_cli_option_reaches_the_flow(job: str) -> None:
    command = typer.main.get_command(app).commands[job]
    flow = set(inspect.signature(JOBS[job][0].fn).parameters)
    missing = {p.name for p in command.params} - flow - CLI_ONLY[job]
    assert not missing, f"`imagineid {job}` options the {job} flow (and so its deployments) cannot take: {missing}"


def test_deployments_pass_only_parameters_their_flows_take() -> None:
    from pathlib import Path

    specs = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())["deployments"]
    flows_by_entry = {
        "flows/preprocess.py:preprocess_flow": "preprocess",
        "flows/train.py:train_flow": "train",
        "flows/generate.py:generate_flow": "generate",
        "flows/evaluate.py:evaluate_flow": "evaluate",
    }
    for spec in specs:
        job = flows_by_entry[spec["entrypoint"]]
        taken = set(inspect.signature(JOBS[job][0].fn).parameters)
        assert set(spec.get("parameters", {})) <= taken, (spec["name"], set(spec["parameters"]) - taken)


def test_a_bad_choice_fails_before_any_work() -> None:
    with pytest.raises(ValueError, match="detector must be one of dlib, fan"):
        PreprocessConfig(detector="foo")
    with pytest.raises(ValueError, match="morphable flame needs both"):
        PreprocessConfig(morphable="flame")
    with pytest.raises(ValueError, match="profile must be one of"):
        TrainConfig(profile="sd21")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        GenerateConfig(precision="int8")
    with pytest.raises(ValueError, match="strength must be in"):
        GenerateConfig(strength=0.0)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        GenerateConfig(batch_size=0)


def test_training_settings_resolve_in_order_and_bad_ones_name_the_key(tmp_path) -> None:
    (tmp_path / "run.yaml").write_text("adapters:\n  steps: 500\n  lr: 1e-4\nhidden: 96\n")
    config = TrainConfig.load(tmp_path / "run.yaml", overrides=["hidden=64", "max_steps=null", "content.window=16"])
    assert (config.adapters.steps, config.adapters.lr, config.adapters.batch_size) == (500, 1e-4, 8)
    assert (config.hidden, config.max_steps, config.content.window) == (64, None, 16)
    assert TrainConfig.from_dict(config.to_dict()) == config  # RUN/train_config.json reads back as the same run
    settings = ["workers=4", "content.accumulate=2", "content.dropout=0", "content.augment=no"]
    parallel = TrainConfig.load(overrides=settings)
    assert (parallel.workers, parallel.content.accumulate, parallel.content.dropout) == (4, 2, 0.0)
    assert parallel.content.augment is False and TrainConfig.from_dict(parallel.to_dict()) == parallel
    assert parallel.stage("content") == parallel.content and TrainConfig(max_steps=5).stage("content").steps == 5
    for bad, message in [
        (["hiden=3"], "unknown training setting 'hiden'"),
        (["adapters.step=3"], "unknown setting(s) of stage adapters: step"),
        (["hidden=abc"], "hidden takes a int"),
        (["hidden=3.5"], "hidden takes a int"),
        (["identity=3"], "identity takes a mapping"),
        (["profile=sd21"], "profile must be one of"),
        (["no-equals-sign"], "--set takes key=value"),
        (["workers=3"], "identity.batch_size 32 must split evenly into workers × accumulate = 3 × 1"),
        (["workers=0"], "workers must be >= 1"),
        (["content.accumulate=0"], "accumulate must be >= 1"),
        (["content.dropout=1"], "dropout must be in [0, 1)"),
        (["content.augment=maybe"], "content.augment takes a bool"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainConfig.load(overrides=bad)
