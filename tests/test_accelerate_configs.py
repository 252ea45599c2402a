"""The accelerate configs shipped for multi-GPU runs load with accelerate's own config class."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

import grouptune

CONFIGS = Path(grouptune.__file__).parent / "configs" / "accelerate"
EXPECTED = {  # file: (engine, machines, processes, engine settings that must be set)
    "ddp.yaml": (DistributedType.MULTI_GPU, 1, 8, {}),
    "ddp_multinode.yaml": (DistributedType.MULTI_GPU, 2, 16, {}),
    "fsdp.yaml": (DistributedType.FSDP, 1, 8, {"fsdp_state_dict_type": "FULL_STATE_DICT"}),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 1, 8, {"zero_stage": 2, "gradient_accumulation_steps": 1}),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 1, 8, {"zero_stage": 3, "zero3_save_16bit_model": True}),
}


def test_every_shipped_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    engine, machines, processes, settings = EXPECTED[name]
    cfg = ClusterConfig.from_yaml_file(CONFIGS / name)  # rejects unknown keys
    assert (cfg.distributed_type, cfg.num_machines, cfg.num_processes) == (engine, machines, processes)
    assert cfg.mixed_precision == "bf16" and not cfg.use_cpu
    extra = cfg.fsdp_config if engine == DistributedType.FSDP else cfg.deepspeed_config
    assert {k: extra.get(k) for k in settings} == settings
    if machines > 1:
        assert cfg.main_process_ip and cfg.main_process_port and cfg.num_processes % machines == 0
