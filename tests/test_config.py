from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from rlad import config as cfgmod
from rlad.errors import ConfigError


@dataclass
class Inner:
    lr: float = 1e-3
    layers: tuple[int, ...] = (1, 2)
    weights: str = ""


@dataclass
class Outer:
    steps: int = 10
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    path: Path | None = None
    inner: Inner = field(default_factory=Inner)


def test_overrides_are_typed_and_nested():
    cfg = cfgmod.build(Outer, overrides=["steps=20", "inner.lr=0.5", "flag=true", "inner.layers=3,4", "mode=b"])
    assert cfg.steps == 20 and isinstance(cfg.steps, int)
    assert cfg.inner.lr == 0.5
    assert cfg.flag is True
    assert cfg.inner.layers == (3, 4)
    assert cfg.mode == "b"


def test_yaml_round_trip(tmp_path):
    cfg = cfgmod.build(Outer, overrides=["path=/tmp/w.pth", "inner.weights=abc"])
    cfgmod.save_yaml(cfg, tmp_path / "c.yaml")
    again = cfgmod.build(Outer, tmp_path / "c.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("stepz=3", "unknown config key(s): stepz"),
        ("steps=1.5", "steps: expected an integer"),
        ("flag=maybe", "flag: expected true/false"),
        ("mode=c", "mode: 'c' is not one of"),
        ("inner.lr=fast", "inner.lr: expected a number"),
        ("noequals", "--set expects key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cfgmod.build(Outer, overrides=[override])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfgmod.build(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        cfgmod.build(Outer, bad)
