"""Agreement with the official code of the GFT paper's baselines and of verl's dual clip.

Each oracle below is the official function copied from its repository (path and commit named
above it), with only what a test needs changed: a config object replaced by arguments, imports
of the repository's helpers replaced by their copies (``masked_mean``), branches the released
training scripts never take left out, and logging dropped. Our functions must give the same
values and gradients on random tensors, to 1e-6 (float32).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grouptune.logprobs import selective_log_softmax
from grouptune.losses import asft_loss, chord_loss, chord_mu, grpo_loss, luffy_loss, psft_loss, vocab_kl

TOL = dict(rtol=1e-6, atol=1e-6)


def masked_mean(values, mask, axis=None):
    """verl ``verl/utils/torch_functional.py`` (the PSFT fork's and volcengine/verl@b178a3cd's)."""
    valid_values = torch.where(mask.bool(), values, 0.0)
    return (valid_values * mask).sum(axis=axis) / (mask.sum(axis=axis) + 1e-8)


def random_case(seed, n=5, t=7, spread=0.6):
    """Log-probs, old log-probs (ratios up to e^{±1.8}, so clips act), a ragged mask, advantages of both signs."""
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=gen) * 3
    old = logp + torch.randn(n, t, generator=gen) * spread
    mask = (torch.rand(n, t, generator=gen) > 0.25).float()
    mask[:, 0] = 1.0
    adv = torch.randn(n, generator=gen)
    return logp, old, mask, adv


def grads_of(fn, *tensors):
    leaves = [t.clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


# ----------------------------------------------------------------------------- ASFT
# zhuchichi56/ASFT, train_v2.py @ 42e2560ab4334b940155c942f0578fed26cd0e3a,
# EnhancedTrainer.compute_loss, mode == "asft" (reference logits passed in instead of a forward).

IGNORE_INDEX = -100


def asft_official(shift_logits, ref_logits, shift_labels, kl_weight=0.1):
    shift_logits = shift_logits.view(-1, shift_logits.size(-1))
    shift_labels = shift_labels.view(-1)
    valid_mask = shift_labels != IGNORE_INDEX
    loss_fct = torch.nn.CrossEntropyLoss(reduction="none")
    token_losses = loss_fct(shift_logits, shift_labels)
    probs = torch.softmax(shift_logits, dim=-1)
    valid_labels = torch.clamp(shift_labels, min=0, max=probs.size(-1) - 1)
    weights = probs.gather(1, valid_labels.unsqueeze(-1)).squeeze(-1).detach()
    dft_losses = token_losses * weights
    with torch.no_grad():
        ref_logits = ref_logits.view(-1, ref_logits.size(-1))[: shift_logits.size(0)]
    kl_div = F.kl_div(
        F.log_softmax(shift_logits, dim=-1),
        F.softmax(ref_logits, dim=-1),
        reduction="none",
    ).sum(dim=-1)
    weighted_losses = dft_losses + kl_weight * kl_div
    loss = weighted_losses[valid_mask].sum() / valid_mask.sum()
    return loss


@pytest.mark.parametrize("seed", range(3))
def test_asft_matches_official(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, 17, generator=gen) * 2
    ref = logits + torch.randn(3, 6, 17, generator=gen)  # a reference near the policy
    labels = torch.randint(0, 17, (3, 6), generator=gen)
    mask = (torch.rand(3, 6, generator=gen) > 0.3).float()
    mask[:, 0] = 1.0
    official, (g_official,) = grads_of(lambda x: asft_official(x, ref, labels.masked_fill(mask == 0, IGNORE_INDEX)), logits)

    def ours(x):
        return asft_loss(selective_log_softmax(x, labels), mask, vocab_kl(x, ref, chunk_size=4), kl_coef=0.1)[0]

    mine, (g_mine,) = grads_of(ours, logits)
    torch.testing.assert_close(mine, official, **TOL)
    torch.testing.assert_close(g_mine, g_official, **TOL)


# ----------------------------------------------------------------------------- PSFT and verl's dual clip
# compute_policy_loss_vanilla of verl/trainer/ppo/core_algos.py: zwhong714/PSFT @
# 569b1ba114b9262a8a5cec84ca1a008e97effd0c (verl/verl/trainer/ppo/core_algos.py) and
# volcengine/verl @ b178a3cd56f58b2d502255daba591e92833930a7 compute the same pg_losses; the
# config's clip_ratio_low / clip_ratio_high / clip_ratio_c are arguments, token-mean aggregation.


def compute_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, cliprange_low, cliprange_high,
                                clip_ratio_c=3.0):  # fmt: skip
    assert clip_ratio_c > 1.0
    negative_approx_kl = log_prob - old_log_prob
    # Clamp negative_approx_kl for stability
    negative_approx_kl = torch.clamp(negative_approx_kl, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = masked_mean(torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).float(), response_mask)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    pg_loss = masked_mean(pg_losses, response_mask)  # agg_loss(..., "token-mean")
    return pg_loss, pg_clipfrac_lower


@pytest.mark.parametrize("seed", range(3))
def test_psft_matches_official_one_sequence_per_micro_batch(seed):
    """PSFT's advantages are 1 on every response token; the official run takes a token mean per
    micro-batch of one sequence and averages over micro-batches: grouptune's ``grpo`` aggregation."""
    logp, old, mask, _ = random_case(seed)

    def official(x):
        adv = torch.ones_like(mask) * mask  # compute_advantage, AdvantageEstimator.PSFT
        per_seq = [compute_policy_loss_vanilla(old[i : i + 1], x[i : i + 1], adv[i : i + 1], mask[i : i + 1],
                                               0.2, 0.28, clip_ratio_c=10.0)[0] for i in range(len(x))]  # fmt: skip
        return torch.stack(per_seq).mean()

    v_official, (g_official,) = grads_of(official, logp)
    v_mine, (g_mine,) = grads_of(lambda x: psft_loss(x, old, mask)[0], logp)
    torch.testing.assert_close(v_mine, v_official, **TOL)
    torch.testing.assert_close(g_mine, g_official, **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_grpo_dual_clip_matches_verl(seed):
    logp, old, mask, adv = random_case(seed, spread=1.5)  # ratios beyond 3: the dual clip acts
    adv_t = adv[:, None].expand_as(mask)
    v_official, (g_official,) = grads_of(lambda x: compute_policy_loss_vanilla(old, x, adv_t, mask, 0.2, 0.28)[0], logp)
    lower = compute_policy_loss_vanilla(old, logp, adv_t, mask, 0.2, 0.28)[1]
    assert lower > 0, "the case must exercise the dual clip"
    out = {}
    v_mine, (g_mine,) = grads_of(lambda x: _store(out, grpo_loss(x, old, mask, adv, epsilon_high=0.28,
                                                                 dual_clip=3.0, log_ratio_clip=20.0)), logp)  # fmt: skip
    torch.testing.assert_close(v_mine, v_official, **TOL)
    torch.testing.assert_close(g_mine, g_official, **TOL)
    assert out["clip_ratio/dual"] == pytest.approx(float(lower), abs=1e-6)


def _store(out, result):
    out.update(result[1])
    return result[0]


# ----------------------------------------------------------------------------- LUFFY
# ElliottYan/LUFFY @ 01f4ae066249e6965ce0d5512ccdf99a12895c74,
# luffy/verl/verl/mix_src/mix_core_alg.py: compute_token_on_off_policy_loss, with the branches
# exp_scripts/train.sh takes (on_policy_reshape "no_reshape", off_policy_reshape "p_div_p_0.1",
# no target_probs, no off/all max/min clip) and the pg_loss / on/off losses it returns.


def compute_token_on_off_policy_loss(old_log_prob, log_prob, advantages, eos_mask, cliprange, clip_upper_bound,
                                     prefix_mask, loss_remove_token_mean=False, loss_remove_clip=False):  # fmt: skip
    negative_approx_kl = log_prob - old_log_prob
    ratio = torch.exp(negative_approx_kl)  # [bsz, l]
    on_pg_losses = -advantages * ratio
    upper_bound = max(clip_upper_bound, 1.0 + cliprange)
    if loss_remove_clip is False:
        on_pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, upper_bound)
        on_pg_losses = torch.max(on_pg_losses, on_pg_losses2)
    off_ratio = torch.exp(log_prob)  # [bsz, l]
    off_ratio = off_ratio / (off_ratio + 0.1)  # off_policy_reshape == "p_div_p_0.1"
    off_pg_losses = -advantages * off_ratio
    prefix_mask = prefix_mask.float()
    pg_losses = off_pg_losses * prefix_mask + on_pg_losses * (1 - prefix_mask)
    if loss_remove_token_mean is True:
        pg_loss = (pg_losses * eos_mask).sum() / eos_mask.shape[-1]
    else:
        pg_loss = masked_mean(pg_losses, eos_mask)
    return pg_loss


@pytest.mark.parametrize("seed", range(3))
def test_luffy_matches_official(seed):
    """One micro-batch of the released run (loss_remove_clip, loss_remove_token_mean): the sum over
    tokens / the padded width. With the entropy bonus of MIXDataParallelPPOActor.update_policy:
    ``pg_loss - masked_mean(entropy, response_mask) * entropy_coeff``."""
    logp, old, mask, adv = random_case(seed, n=8)
    gen = torch.Generator().manual_seed(100 + seed)
    entropy = torch.rand(8, 7, generator=gen) * 2
    on_policy = torch.tensor([False] + [True] * 7)  # 1 demonstration + 7 rollouts
    prefix_mask = (~on_policy)[:, None].expand_as(mask)  # every token of the demonstration is off-policy

    def official(x, h):
        pg = compute_token_on_off_policy_loss(old, x, adv[:, None] * mask, mask, 0.2, 1.0, prefix_mask,
                                              loss_remove_token_mean=True, loss_remove_clip=True)  # fmt: skip
        return pg - masked_mean(h, mask) * 0.001

    v_official, g_official = grads_of(official, logp, entropy)
    v_mine, g_mine = grads_of(lambda x, h: luffy_loss(x, old, mask, adv, on_policy, normalizer=mask.shape[-1],
                                                      entropy=h, entropy_coef=0.001)[0], logp, entropy)  # fmt: skip
    torch.testing.assert_close(v_mine, v_official, **TOL)
    for mine, theirs in zip(g_mine, g_official):
        torch.testing.assert_close(mine, theirs, **TOL)


# ----------------------------------------------------------------------------- CHORD
# modelscope/Trinity-RFT: trinity/algorithm/policy_loss_fn/chord_policy_loss.py
# @ 041433056e9067e35a42a3943ecbaf89bef24518 (mu_schedule_function, phi_function, SFTPhiLossFn,
# MIXCHORDPolicyLossFn.__call__ without use_dynamic_bsz), ppo_policy_loss.py
# @ 221b0759e0d11c51b1bd3b7512c8b5c6c8431d69 (PPOPolicyLossFn.__call__, default clip_ratio_c 3,
# token-mean, no sequence masking), sft_loss.py @ 51d229f5ccb1d5ed5cd376c39f6d576789f54d4a (SFTLossFn).


def mu_schedule_function(global_step, mu_warmup_steps, mu_decay_steps, mu_peak, mu_valley):
    # Warmup
    if global_step < mu_warmup_steps:
        return (global_step / mu_warmup_steps) * mu_peak
    # Decay
    if global_step >= (mu_warmup_steps + mu_decay_steps):
        return mu_valley
    adjusted_step = global_step - mu_warmup_steps
    cosine_decay = 0.5 * (1 + math.cos(math.pi * adjusted_step / mu_decay_steps))
    decayed_mu = (mu_peak - mu_valley) * cosine_decay + mu_valley
    return decayed_mu


def ppo_policy_loss(logprob, old_logprob, action_mask, advantages, clip_range=0.2, clip_ratio_c=3.0):
    negative_approx_kl = logprob - old_logprob
    negative_approx_kl = torch.clamp(negative_approx_kl, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return masked_mean(pg_losses, action_mask)


def sft_phi_loss(logprob, action_mask):
    token_prob = torch.exp(logprob)
    weighted_phi = token_prob * (1 - token_prob)  # phi_function
    return masked_mean(-logprob * weighted_phi.detach(), action_mask)


def sft_loss(logprob, action_mask):
    return masked_mean(-logprob, action_mask)


def mix_chord(logprob, old_logprob, action_mask, advantages, expert_mask, step, mu_args, enable_phi_function,
              gradient_accumulation, train_batch_size_usual, train_batch_size_expert):  # fmt: skip
    n_usual_exp = torch.sum(~expert_mask).item()
    n_expert_exp = torch.sum(expert_mask).item()
    per_micro_batch_weight_usual = gradient_accumulation / train_batch_size_usual
    per_micro_batch_weight_expert = gradient_accumulation / train_batch_size_expert
    grpo_loss = ppo_policy_loss(logprob[~expert_mask], old_logprob[~expert_mask], action_mask[~expert_mask],
                                advantages[~expert_mask])  # fmt: skip
    grpo_loss = grpo_loss * n_usual_exp * per_micro_batch_weight_usual
    sft_fn = sft_phi_loss if enable_phi_function else sft_loss
    sft = sft_fn(logprob[expert_mask], action_mask[expert_mask])
    sft = sft * n_expert_exp * per_micro_batch_weight_expert
    mu = mu_schedule_function(step, *mu_args)
    return (1 - mu) * grpo_loss + mu * sft


def test_chord_mu_matches_official():
    for args in [(0, 0, 0.1, 0.1), (0, 200, 0.9, 0.05), (200, 400, 0.5, 0.02)]:
        for step in [1, 2, 50, 199, 200, 201, 399, 600, 601, 1000]:
            assert chord_mu(step, *args) == pytest.approx(mu_schedule_function(step, *args), rel=1e-12), (args, step)


@pytest.mark.parametrize("phi", [True, False])
@pytest.mark.parametrize("step", [1, 120])
def test_chord_matches_official_on_one_micro_batch(phi, step):
    """One micro-batch holding a whole optimizer step (gradient_accumulation 1): 8 rollouts and 2
    expert rows, each loss a token mean of its own rows; mu from the chord_mu schedule."""
    logp, old, mask, adv = random_case(7, n=10, spread=1.5)
    expert = torch.tensor([False] * 8 + [True] * 2)
    mu_args = (0, 200, 0.9, 0.05)

    def official(x):
        return mix_chord(x, old, mask, adv[:, None].expand_as(mask), expert, step, mu_args, phi, 1, 8, 2)

    def ours(x):
        return chord_loss(x[:8], old[:8], mask[:8], adv[:8], x[8:], mask[8:], mu=chord_mu(step, *mu_args), phi=phi,
                          dual_clip=3.0)[0]  # fmt: skip

    v_official, (g_official,) = grads_of(official, logp)
    v_mine, (g_mine,) = grads_of(ours, logp)
    torch.testing.assert_close(v_mine, v_official, **TOL)
    torch.testing.assert_close(g_mine, g_official, **TOL)
    metrics = chord_loss(logp[:8], old[:8], mask[:8], adv[:8], logp[8:], mask[8:], mu=0.5, phi=phi)[1]
    assert metrics["clip_ratio/dual"] > 0, "the case must exercise the dual clip"
