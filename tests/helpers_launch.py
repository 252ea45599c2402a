"""Launching several processes from a test: ``torchrun`` and ``accelerate launch`` in their own
process group (killed whole on timeout), and the shim that runs the sharded engines on CPU."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from importlib.resources import files

# The sharded engines on CPU: torch's fully_shard and DeepSpeed's ZeRO run on CPU tensors with
# gloo, but accelerate turns FSDP and DeepSpeed on only on accelerator hosts (MULTI_GPU, ...).
# These runs are started by `accelerate launch --config_file <a config shipped in
# grouptune/configs/accelerate>`, which sets the engine's environment as on a GPU node, and the
# shim tells accelerate's state it is on such a host; devices and backend stay CPU and gloo
# (DeepSpeed picks its CPU accelerator). Everything after that is the real path: policy and
# reference model sharded by accelerate / DeepSpeed, checkpoints gathered and re-sharded.
SHIM = """
from accelerate.state import PartialState
from accelerate.utils import DistributedType
PartialState(cpu=True).distributed_type = DistributedType.MULTI_GPU
"""


def torchrun(n: int, *args, timeout: float = 240) -> tuple[int, str]:
    """``torchrun --standalone`` (a free port) in its own process group, killed whole on timeout."""
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *args],
               timeout)  # fmt: skip


def accelerate_launch(config: str, n: int, *args, timeout: float = 300) -> tuple[int, str]:
    """``accelerate launch`` with a shipped config, ``n`` processes, full precision, a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = files("grouptune") / "configs" / "accelerate" / f"{config}.yaml"
    return run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
                "--num_processes", str(n), "--mixed_precision", "no", "--main_process_port", str(port), *args],
               timeout)  # fmt: skip


def run(cmd: list, timeout: float) -> tuple[int, str]:
    """A launcher in its own process group, killed whole on timeout."""
    cmd = list(map(str, cmd))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, f"timed out after {timeout} s\n{out}"
    return proc.returncode, out
