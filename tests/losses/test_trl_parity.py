"""Numerical agreement with TRL (the oracle), calling TRL's own code, not a copy of it.

The trainers' loss methods are called unbound on a light stand-in ``self``
(``types.SimpleNamespace`` with the attributes they read and a one-process accelerator), and the
model forward they would run is replaced by one returning our tensors. Values, gradients and
logged metrics must agree to 1e-6.
"""

import types
from collections import defaultdict

import pytest
import torch

trl_utils = pytest.importorskip("trl.trainer.utils")
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.sft_trainer import SFTTrainer  # noqa: E402

from grouptune.logprobs import logprobs_and_entropy, selective_log_softmax  # noqa: E402
from grouptune.losses import dft_loss, dpo_loss, grpo_loss  # noqa: E402

TOL = dict(rtol=1e-6, atol=1e-6)


class OneProcessAccelerator:
    """The accelerator methods TRL's loss code calls, for a single process."""

    num_processes = 1
    device = torch.device("cpu")
    parallelism_config = None

    def reduce(self, t, reduction="sum"):
        return t

    def gather(self, t):
        return t

    def gather_for_metrics(self, t):
        return t


def stand_in(**attrs):
    base = dict(
        accelerator=OneProcessAccelerator(),
        model=types.SimpleNamespace(training=True),
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    return types.SimpleNamespace(**{**base, **attrs})


# ----------------------------------------------------------------------------- GRPO family


def grpo_batch(seed, n=6, t=7):
    """Random log-probs with ratios far enough from 1 to clip, ragged masks and a fully masked row.
    Padding holds finite values: TRL multiplies by the mask, so it needs them finite."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=g) * 3
    old = logp + 0.3 * torch.randn(n, t, generator=g)
    ref = logp + 0.2 * torch.randn(n, t, generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    lengths[2] = 0
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    adv = torch.randn(n, generator=g)
    return logp, old, ref, mask, adv


EPSILONS = {"token": (0.2, 0.28), "sequence": (3e-4, 4e-4)}  # DAPO's and GSPO's clip ranges


def trl_grpo(logp, old, ref, mask, adv, *, loss_type, level, beta, num_items, gas=1, spg=1, max_len=9):
    """TRL's GRPOTrainer._compute_loss on a stand-in; returns (loss, metrics)."""
    entropies = torch.zeros_like(logp)
    fake = stand_in(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logp, entropies, None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=EPSILONS[level][0],
        epsilon_high=EPSILONS[level][1],
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=spg),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        current_gradient_accumulation_steps=gas,
        max_completion_length=max_len,
        _entropy_bonus_enabled=False,
    )
    n, t = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": torch.tensor(float(num_items)),
    }
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, {k: v[-1] for k, v in fake._metrics["train"].items()}


def ours_grpo(logp, old, ref, mask, adv, *, loss_type, level, beta, **counts):
    return grpo_loss(
        logp, old, mask, adv, ref_logprobs=ref if beta else None, beta=beta,
        epsilon_low=EPSILONS[level][0], epsilon_high=EPSILONS[level][1], loss_type=loss_type, importance_sampling_level=level, max_completion_length=9, **counts,
    )  # fmt: skip


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_trl(loss_type, level, beta):
    """Value, gradient with respect to the policy log-probs, clip fractions and KL."""
    logp0, old, ref, mask, adv = grpo_batch(seed=len(loss_type) + 10 * len(level) + int(100 * beta))
    x_trl = logp0.clone().requires_grad_(True)
    x_ours = logp0.clone().requires_grad_(True)
    kw = dict(loss_type=loss_type, level=level, beta=beta)
    trl_loss, trl_metrics = trl_grpo(x_trl, old, ref, mask, adv, num_items=mask.sum(), **kw)
    loss, metrics = ours_grpo(x_ours, old, ref, mask, adv, **kw)
    torch.testing.assert_close(loss, trl_loss, **TOL)
    trl_loss.backward()
    loss.backward()
    torch.testing.assert_close(x_ours.grad, x_trl.grad, **TOL)
    for ours_key, trl_key in [("clip_ratio/low", "clip_ratio/low_mean"), ("clip_ratio/high", "clip_ratio/high_mean"), ("clip_ratio/region", "clip_ratio/region_mean")] + ([("kl", "kl")] if beta else []):  # fmt: skip
        assert metrics[ours_key] == pytest.approx(trl_metrics[trl_key], abs=1e-6), ours_key
    assert metrics["clip_ratio/region"] > 0  # the batch does exercise the clipping


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_grpo_gradient_accumulation_matches_trl(loss_type):
    """Two micro-batches of 3 sequences: TRL with 2 accumulation steps (and, for dapo, 2 steps per
    generation with ``num_items_in_batch`` = the tokens of the whole batch) against ours with the
    step's counts."""
    logp, old, ref, mask, adv = grpo_batch(seed=11)
    kw = dict(loss_type=loss_type, level="token", beta=0.04)
    trl_total, ours_total = 0.0, 0.0
    for s in (slice(0, 3), slice(3, 6)):
        part = (logp[s], old[s], ref[s], mask[s], adv[s])
        trl_total += trl_grpo(*part, num_items=mask.sum(), gas=2, spg=2, **kw)[0]
        ours_total += ours_grpo(*part, token_normalizer=mask.sum(), sequence_normalizer=6, **kw)[0]
    torch.testing.assert_close(ours_total, trl_total, **TOL)


# ----------------------------------------------------------------------------- DFT


def trl_dft(logp, mask, num_items=None):
    """SFTTrainer.compute_loss with loss_type="dft"; the fused LM head returns our log-probs."""
    fake = stand_in(
        compute_loss_func=None,
        label_smoother=None,
        args=types.SimpleNamespace(loss_type="dft", average_tokens_across_devices=False),
    )
    log_probs = torch.where(mask.bool(), logp, 0.0)  # the fused head's output: zero on ignored positions

    def model(**kwargs):
        assert kwargs["fused_lm_head"] is True
        return types.SimpleNamespace(
            log_probs=log_probs,
            label_mask=mask.bool(),
            entropy=torch.zeros_like(logp),
            is_top1=torch.zeros_like(mask, dtype=torch.bool),
        )

    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "labels": torch.zeros_like(mask),
    }
    return SFTTrainer.compute_loss(fake, model, inputs, num_items_in_batch=num_items)


def test_dft_matches_trl():
    g = torch.Generator().manual_seed(3)
    logp0 = -torch.rand(4, 6, generator=g) * 4
    mask = (torch.rand(4, 6, generator=g) > 0.3).long()
    x_trl, x_ours = logp0.clone().requires_grad_(True), logp0.clone().requires_grad_(True)
    trl_loss = trl_dft(x_trl, mask)
    loss, _ = dft_loss(x_ours, mask)
    torch.testing.assert_close(loss, trl_loss, **TOL)
    trl_loss.backward()
    loss.backward()
    torch.testing.assert_close(x_ours.grad, x_trl.grad, **TOL)
    # micro-batches: TRL's num_items_in_batch is our token_normalizer
    halves = (slice(0, 2), slice(2, 4))
    trl_total = sum(trl_dft(logp0[s], mask[s], num_items=mask.sum()) for s in halves)
    ours_total = sum(dft_loss(logp0[s], mask[s], token_normalizer=mask.sum())[0] for s in halves)
    torch.testing.assert_close(ours_total, trl_total, **TOL)


# ----------------------------------------------------------------------------- DPO


def test_dpo_sigmoid_matches_trl():
    """DPOTrainer._compute_loss (loss_type sigmoid, precomputed reference log-probs): the fused head
    returns per-token log-probs of [chosen; rejected], which TRL sums over the completion."""
    g = torch.Generator().manual_seed(5)
    pairs, length = 3, 6
    per_token0 = -torch.rand(2 * pairs, length - 1, generator=g)
    completion_mask = torch.zeros(2 * pairs, length, dtype=torch.long)
    completion_mask[:, 2:] = 1
    per_token0 = per_token0 * completion_mask[:, 1:]  # zero outside the completion, as the head gives
    ref = -torch.rand(2 * pairs, generator=g) * 4
    beta = 0.3
    fake = stand_in(
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False,
    )  # fmt: skip
    x_trl, x_ours = per_token0.clone().requires_grad_(True), per_token0.clone().requires_grad_(True)

    def model(**kwargs):
        zeros = torch.zeros_like(per_token0)
        return types.SimpleNamespace(log_probs=x_trl, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    inputs = {
        "input_ids": torch.zeros(2 * pairs, length, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:pairs],
        "ref_rejected_logps": ref[pairs:],
    }
    trl_loss = DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    sums = x_ours.sum(-1)
    loss, metrics = dpo_loss(sums[:pairs], sums[pairs:], ref[:pairs], ref[pairs:], beta=beta)
    torch.testing.assert_close(loss, trl_loss, **TOL)
    trl_loss.backward()
    loss.backward()
    torch.testing.assert_close(x_ours.grad, x_trl.grad, **TOL)
    trl_metrics = {k: v[-1] for k, v in fake._metrics["train"].items()}
    for ours_key, trl_key in [("reward_chosen", "rewards/chosen"), ("reward_rejected", "rewards/rejected"), ("reward_margin", "rewards/margins"), ("reward_accuracy", "rewards/accuracies")]:  # fmt: skip
        assert metrics[ours_key] == pytest.approx(trl_metrics[trl_key], abs=1e-6), ours_key


# ----------------------------------------------------------------------------- log-probs and entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selective_log_softmax_and_entropy_match_trl(temperature):
    """float32 logits: values and gradients of TRL's selective_log_softmax / entropy_from_logits."""
    g = torch.Generator().manual_seed(7)
    logits0 = torch.randn(3, 8, 301, generator=g) * 3
    index = torch.randint(0, 301, (3, 8), generator=g)
    x_trl, x_ours = logits0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
    trl_logp = trl_utils.selective_log_softmax(x_trl, index, temperature=temperature)
    trl_entropy = trl_utils.entropy_from_logits(x_trl / temperature)
    logp, entropy = logprobs_and_entropy(x_ours, index, temperature=temperature)
    torch.testing.assert_close(logp, trl_logp, **TOL)
    torch.testing.assert_close(entropy, trl_entropy, **TOL)
    w = torch.randn(3, 8, generator=g)
    (trl_logp.sum() + (w * trl_entropy).sum()).backward()
    (logp.sum() + (w * entropy).sum()).backward()
    torch.testing.assert_close(x_ours.grad, x_trl.grad, **TOL)


def test_selective_log_softmax_bf16_against_trl():
    """TRL computes the bf16 log-softmax in bf16 (its output is bf16); ours is the float32 value of
    the same inputs. Rounded to bf16 they agree to one bf16 ulp (2^-8 relative)."""
    g = torch.Generator().manual_seed(8)
    logits = (torch.randn(2, 16, 1001, generator=g) * 3).bfloat16()
    index = torch.randint(0, 1001, (2, 16), generator=g)
    trl_logp = trl_utils.selective_log_softmax(logits, index)
    assert trl_logp.dtype == torch.bfloat16
    torch.testing.assert_close(selective_log_softmax(logits, index).bfloat16(), trl_logp, rtol=2**-8, atol=0)
