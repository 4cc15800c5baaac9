"""The accelerate launch configs in configs/accelerate load with accelerate's own reader and say what
docs/vlm.md says they do (launching them needs GPUs; the 2-process CPU check is test_two_process.py)."""

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name, kind", [("ddp.yaml", "MULTI_GPU"), ("zero3.yaml", "DEEPSPEED")])
def test_launch_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type.value == kind and config.mixed_precision == "bf16" and not config.use_cpu
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3
