"""One way to configure both CLIs (edge/settings.py): the same setting resolves the same in ``robocar`` and
``robocar-edge`` (flag > environment > robocar.toml > default), by one backend rule, and each default is
written once in the code."""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import cli as edge_cli
from edge import settings
from pipelines import settings as pipeline_settings
from pipelines.cli import build_parser as robocar_parser
from pipelines.commands.registry import resolve_registry_settings

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "pipelines", "steps", "processing", "training", "inference", "infra")
# Defaults whose value also names other things, so the same word appears for another reason: "robocar"
# is the prefix and also the program, its logger, the TOML table and the stack; "local" is a backend and
# a compile mode; "camera" a frame source kind; "0" is zero.
# Words and small numbers, not defaults; "pilot" is a recipe name, the key of every per-recipe table.
SHARED_WORDS = {"robocar", "local", "camera", "0", "2", "pilot"}
ROLE = "arn:aws:iam::123456789012:role/robocar-pipeline-execution"


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A working directory without robocar.toml and an environment without ROBOCAR_* or AWS region."""
    monkeypatch.chdir(tmp_path)
    for item in settings.SETTINGS:
        for name in item.env:
            monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def robocar_registry(*flags: str) -> tuple[Any, ...]:
    """What `robocar registry list` resolves: the group, the region, where it acts."""
    args = robocar_parser().parse_args(["registry", "list", *flags])
    resolve_registry_settings(args)
    return args.model_package_group, args.region, args.backend_choice


def robocar_pipeline(*flags: str) -> tuple[Any, ...]:
    """What `robocar pipeline status` resolves."""
    args = robocar_parser().parse_args(["pipeline", "status", *flags])
    resolved, where = pipeline_settings.resolve_with_backend(args)
    return resolved.model_package_group, resolved.region, where


def robocar_edge(*flags: str) -> tuple[Any, ...]:
    """What `robocar-edge pull` resolves."""
    args = edge_cli.build_parser().parse_args(["pull", *flags])
    edge_cli.resolve_settings(args)
    return args.model_package_group, args.region, edge_cli.registry_location(args)


def views(*flags: str) -> list[tuple[str, str, Path | None]]:
    """(group, region, local workspace or None for AWS) as each command sees them."""
    found = []
    for view in (robocar_registry, robocar_pipeline):
        group, region, where = view(*flags)
        found.append((group, region, where.local_root))
    found.append(robocar_edge(*flags))
    return found


def test_each_setting_resolves_the_same_in_both_clis_flag_env_config_default(clean, tmp_path) -> None:
    default = (settings.default_of("model_package_group"), "us-east-1", Path(".robocar"))
    clean.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert views() == [default] * 3, "the defaults (local: ./.robocar)"
    clean.delenv("AWS_DEFAULT_REGION")  # an environment variable: it would beat robocar.toml below

    (tmp_path / "robocar.toml").write_text(
        '[robocar]\nmodel_package_group = "toml-group"\nregion = "eu-west-1"\nworkspace = "toml-ws"\n'
    )
    assert views() == [("toml-group", "eu-west-1", Path("toml-ws"))] * 3, "robocar.toml beats the default"

    clean.setenv("ROBOCAR_MODEL_PACKAGE_GROUP", "env-group")
    clean.setenv("ROBOCAR_REGION", "eu-central-1")
    clean.setenv("ROBOCAR_LOCAL_ROOT", "env-ws")
    assert views() == [("env-group", "eu-central-1", Path("env-ws"))] * 3, "the environment beats the file"

    flags = ("--model-package-group", "flag-group", "--region", "ap-south-1", "--workspace", "flag-ws")
    assert views(*flags) == [("flag-group", "ap-south-1", Path("flag-ws"))] * 3, "a flag beats all"
    assert views("--group", "alias-group")[0][0] == "alias-group" == views("--group", "alias-group")[2][0]


def test_one_backend_rule_in_both_clis(clean, tmp_path) -> None:
    clean.setenv("ROBOCAR_ROLE_ARN", ROLE)
    clean.setenv("ROBOCAR_BUCKET", "robocar-data-123456789012")
    clean.setenv("AWS_DEFAULT_REGION", "us-east-1")

    def backends(*flags: str) -> list[Path | None]:
        return [local_root for _, _, local_root in views(*flags)]

    assert backends() == [Path(".robocar")] * 3
    assert backends("--aws") == [None] * 3 == backends("--backend", "aws")
    assert backends("--endpoint-url", "http://127.0.0.1:5000") == [None] * 3, "an endpoint means AWS"
    (tmp_path / "robocar.toml").write_text('[robocar]\nbackend = "aws"\n')
    assert backends() == [None] * 3
    assert backends("--workspace", "ws") == [Path("ws")] * 3, "a flag's workspace beats the file's backend"
    assert backends("--local") == [Path(".robocar")] * 3
    for view in (robocar_registry, robocar_pipeline, robocar_edge):
        with pytest.raises(settings.SettingsError, match="selects the local workspace but --backend aws"):
            view("--aws", "--workspace", "ws")
    clean.setenv("ROBOCAR_LOCAL_ROOT", "env-ws")  # what local steps run with
    for view in (robocar_registry, robocar_pipeline, robocar_edge):
        with pytest.raises(settings.SettingsError, match="unset it to use AWS"):
            view("--aws")


def test_a_bad_value_is_refused_naming_where_it_came_from(clean, tmp_path) -> None:
    clean.setenv("ROBOCAR_BACKEND", "cloud")
    with pytest.raises(settings.SettingsError, match=r"\$ROBOCAR_BACKEND must be 'local' or 'aws'"):
        robocar_registry()
    clean.delenv("ROBOCAR_BACKEND")
    (tmp_path / "robocar.toml").write_text("[robocar]\nmqtt_port = 8883\nedge_interval = 2.5\nbucket = 5\n")
    with pytest.raises(settings.SettingsError, match="bucket must be a string"):
        robocar_edge()
    (tmp_path / "robocar.toml").write_text(
        '[robocar]\nmqtt_port = 8883\nedge_interval = 2.5\nedge_root = "c"\n'
    )
    args = edge_cli.build_parser().parse_args(["run"])
    edge_cli.resolve_settings(args)
    assert (args.mqtt_port, args.edge_interval, args.edge_root) == (8883, 2.5, Path("c"))
    clean.setenv("ROBOCAR_MQTT_PORT", "eighty")
    with pytest.raises(settings.SettingsError, match=r"\$ROBOCAR_MQTT_PORT='eighty' is not an integer"):
        edge_cli.resolve_settings(edge_cli.build_parser().parse_args(["run"]))


def test_both_clis_offer_each_setting_by_the_same_flag() -> None:
    """Every setting either CLI takes is spelled as the table says, with its aliases, in both."""

    def flags_of(parser: Any, *path: str) -> set[str]:
        for name in path:
            parser = next(a for a in parser._actions if a.dest and a.choices and name in a.choices).choices[
                name
            ]
        return {option for action in parser._actions for option in action.option_strings}

    edge_pull = flags_of(edge_cli.build_parser(), "pull")
    robocar_registry_list = flags_of(robocar_parser(), "registry", "list")
    robocar_edge_pull = flags_of(robocar_parser(), "edge", "pull")
    assert edge_pull == robocar_edge_pull
    for key in ("model_package_group", "region", "endpoint_url", "workspace", "backend"):
        item = settings.setting(key)
        spelled = {item.flag, *item.aliases}
        assert spelled <= edge_pull and spelled <= robocar_registry_list, key
    assert {"--local", "--aws"} <= edge_pull & robocar_registry_list


def duplicated_defaults(root: Path, values: set[str]) -> dict[str, list[str]]:
    """``value -> ["file:line", ...]`` for each value written as a string literal more than once in the
    package folders (docstrings and f-strings' text are not literals of the value itself)."""
    found: dict[str, list[str]] = {value: [] for value in values}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in found:
                    found[node.value].append(f"{path.relative_to(root)}:{node.lineno}")
    return {value: places for value, places in found.items() if len(places) > 1}


def distinctive_defaults() -> set[str]:
    return {s.default for s in settings.SETTINGS if s.default is not None} - SHARED_WORDS


def test_each_default_is_written_once() -> None:
    assert {
        "robocar-pilots",
        "robocar-pipeline",
        "rasp4b",
        ".robocar",
        "robocar/drive",
    } <= distinctive_defaults()
    assert duplicated_defaults(REPO, distinctive_defaults()) == {}


def test_a_second_copy_of_a_default_is_found(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "edge" / "settings.py").write_text('GROUP = "robocar-pilots"\n')
    (tmp_path / "pipelines" / "demo.py").write_text('"""Uses robocar-pilots."""\nGROUP = "robocar-pilots"\n')
    assert duplicated_defaults(tmp_path, {"robocar-pilots"}) == {
        "robocar-pilots": ["edge/settings.py:1", "pipelines/demo.py:2"]
    }


def test_the_epochs_default_is_one_value_and_the_demo_names_its_own() -> None:
    from pipelines.demo import DEMO_EPOCHS, DemoConfig
    from training.spec import DEFAULT_EPOCHS
    from training.train import parse_args

    golden = json.loads((REPO / "tests" / "golden" / "robocar_definition.json").read_text())
    (epochs,) = [p for p in golden["Parameters"] if p["Name"] == "Epochs"]
    container = {"SM_CHANNEL_TRAIN": "t", "SM_CHANNEL_VALIDATION": "v", "SM_MODEL_DIR": "m"}
    assert int(epochs["DefaultValue"]) == parse_args([], container).epochs == DEFAULT_EPOCHS
    assert DemoConfig().epochs == DEMO_EPOCHS


def test_the_readme_table_lists_every_setting_as_the_code_defines_it() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| setting | flag | environment |") :].split("\n\n")[0]
    for item in settings.SETTINGS:
        (row,) = [line for line in table.splitlines() if f"`{item.key}`" in line]
        for word in (item.flag, *item.aliases, *item.env, *([item.default] if item.default else [])):
            assert f"`{word}" in row, (item.key, word)


def test_a_recipe_brings_its_own_pipeline_and_group_unless_they_are_named(clean: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    pipeline_settings.add_arguments(parser)
    assert "{pilot,classifier,detection}" in parser.format_help()  # argparse lists the choices
    pilot = pipeline_settings.resolve(parser.parse_args([]), use_examples=True)
    assert (pilot.recipe, pilot.pipeline_name, pilot.model_package_group) == (
        "pilot", "robocar-pipeline", "robocar-pilots",
    )  # fmt: skip
    classifier = pipeline_settings.resolve(parser.parse_args(["--recipe", "classifier"]), use_examples=True)
    assert (classifier.pipeline_name, classifier.model_package_group) == settings.RECIPE_NAMES["classifier"]
    named = pipeline_settings.resolve(
        parser.parse_args(["--recipe", "classifier", "--group", "mine"]), use_examples=True
    )
    assert (named.pipeline_name, named.model_package_group) == ("robocar-classifier", "mine")
    clean.setenv("ROBOCAR_RECIPE", "tractor")
    with pytest.raises(settings.SettingsError, match=r"\$ROBOCAR_RECIPE must be one of pilot, classifier"):
        pipeline_settings.resolve(parser.parse_args([]), use_examples=True)
