"""grouptune.losses: hand-worked values, analytic gradients, special cases and edge cases.

Notation: ``n`` = token normaliser (number of unmasked tokens unless said otherwise).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grouptune.losses import aggregate, dft_loss, dpo_loss, gft_loss, gift_loss, grpo_loss, sft_loss, una_loss

ln = math.log


def close(actual, expected, rtol=1e-6, atol=1e-7):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-7)


# Two responses of two tokens, the last token of the second one is padding.
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


# ----------------------------------------------------------------------------- aggregation


def test_aggregate_modes():
    """values [[1, 2, 3], [4, 5, 6]], mask [[1, 1, 0], [1, 0, 0]]:
    token: (1 + 2 + 4) / 3; sequence: (3/2 + 4) / 2; constant 12: 7 / 12; token with 10: 7 / 10."""
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(aggregate(v, m, mode="token"), 7 / 3)
    close(aggregate(v, m, mode="sequence"), 2.75)
    close(aggregate(v, m, mode="constant", normalizer=12), 7 / 12)
    close(aggregate(v, m, mode="token", normalizer=10), 0.7)
    close(aggregate(v, m, mode="sequence", normalizer=4), 5.5 / 4)
    close(aggregate(torch.tensor([[2.0], [4.0]]), None, mode="sequence"), 3.0)  # per-sequence values
    close(aggregate(v, torch.zeros(2, 3), mode="token"), 0.0)  # nothing counts: 0, not NaN
    close(aggregate(v, torch.zeros(2, 3), mode="sequence"), 0.0)
    with pytest.raises(ValueError, match="needs a normalizer"):
        aggregate(v, m, mode="constant")
    with pytest.raises(ValueError, match="unknown aggregation mode 'seq'; valid: token, sequence, constant"):
        aggregate(v, m, mode="seq")


# ----------------------------------------------------------------------------- SFT / DFT


def test_sft_hand_value():
    """logp [[-1, -2], [-0.5, pad]]: (1 + 2 + 0.5) / 3."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -7.0]])
    loss, metrics = sft_loss(logp, MASK)
    close(loss, 3.5 / 3)
    assert metrics == {"loss": approx(3.5 / 3)}
    close(sft_loss(logp, MASK, token_normalizer=7)[0], 3.5 / 7)


def test_dft_hand_value_and_gradient():
    """per token -sg(p) logp: e^-1 * 1 + e^-2 * 2 + e^-0.5 * 0.5, over 3 tokens;
    d loss / d logp_t = -p_t / n (the weight is detached)."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -7.0]], requires_grad=True)
    loss, metrics = dft_loss(logp, MASK)
    p = [math.exp(-1), math.exp(-2), math.exp(-0.5)]
    close(loss, (p[0] * 1 + p[1] * 2 + p[2] * 0.5) / 3)
    assert metrics["weight_mean"] == approx(sum(p) / 3)
    loss.backward()
    close(logp.grad, [[-p[0] / 3, -p[1] / 3], [-p[2] / 3, 0.0]])


# ----------------------------------------------------------------------------- GFT

GFT_P = [[0.8, 0.3], [0.6, 0.05]]  # token probabilities
GFT_ADV = [2.0, -1.0]


def test_gft_hand_value():
    """tau = 0.5, A = [2, -1], p = [[0.8, 0.3], [0.6, 0.05]], all four tokens count:
    w = [[1, 0.3], [1, 0.05]] (p <= tau is rectified to w = p);
    loss = (-2*1*ln .8 - 2*.3*ln .3 + 1*ln .6 + .05*ln .05) / 4."""
    logp = torch.tensor(GFT_P).log()
    loss, metrics = gft_loss(logp, torch.ones(2, 2), torch.tensor(GFT_ADV), tau=0.5)
    expected = (-2 * ln(0.8) - 2 * 0.3 * ln(0.3) + ln(0.6) + 0.05 * ln(0.05)) / 4
    close(loss, expected)
    assert metrics == {
        "loss": approx(expected),
        "rectified_frac": 0.5,
        "weight_mean": approx((1 + 0.3 + 1 + 0.05) / 4),
    }


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.5, 1.0])
def test_gft_gradient_wrt_logits_is_analytic(tau):
    """Per token loss_t = -A_i w_t logp_t / n with w_t = sg(p_t if p_t <= tau else 1).

    d loss / d logp_t = -A_i w_t / n; as a coefficient on grad p_t that is -A_i (w_t / p_t) / n:
    1/p_t on confident tokens (p_t > tau, at most 1/tau) and exactly 1 on the others.
    Through the softmax (d logp_t / d z_v = 1[v = y_t] - p_v):
        d loss / d z_{t,v} = -A_i w_t / n * (1[v = y_t] - softmax(z_t)_v).
    """
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 6) * 2).requires_grad_(True)
    y = torch.randint(0, 6, (3, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    adv = torch.tensor([1.5, -0.7, 0.3])
    logp = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    gft_loss(logp, mask, adv, tau=tau)[0].backward()

    probs = torch.softmax(logits.detach(), -1)
    p = probs.gather(-1, y[..., None]).squeeze(-1)
    assert ((p > tau) & (mask > 0)).any() or tau == 1.0  # both branches are exercised
    assert ((p <= tau) & (mask > 0)).any() or tau == 0.0
    w = torch.where(p > tau, torch.ones_like(p), p)
    coef_p = torch.where(p > tau, 1 / p, torch.ones_like(p))  # coefficient of grad p
    assert (coef_p[mask > 0] <= (1 / tau if tau > 0 else math.inf)).all()
    dlogp = -adv[:, None] * w * mask / mask.sum()  # (N, T)
    expected = dlogp[..., None] * (F.one_hot(y, 6) - probs)
    close(logits.grad, expected)


def test_gft_tau_one_is_advantage_weighted_dft_and_tau_zero_is_advantage_weighted_sft():
    torch.manual_seed(1)
    logp = -torch.rand(4, 5) * 3
    mask = (torch.rand(4, 5) > 0.3).float()
    adv = torch.tensor([1.0, -0.5, 2.0, 0.0])
    for tau, weight in ((1.0, lambda lp: lp.exp()), (0.0, lambda lp: torch.ones_like(lp))):
        x = logp.clone().requires_grad_(True)
        x_ref = logp.clone().requires_grad_(True)
        loss = gft_loss(x, mask, adv, tau=tau)[0]
        ref = (-adv[:, None] * weight(x_ref.detach()) * x_ref * mask).sum() / mask.sum()
        close(loss, ref.detach())
        loss.backward()
        ref.backward()
        close(x.grad, x_ref.grad)
    ones = torch.ones(4)  # A = 1: exactly the DFT and SFT losses
    close(gft_loss(logp, mask, ones, tau=1.0)[0], dft_loss(logp, mask)[0])
    close(gft_loss(logp, mask, ones, tau=0.0)[0], sft_loss(logp, mask)[0])


# ----------------------------------------------------------------------------- GRPO family

# log-ratios: row 0 (A = +1): ratios 1.5, 0.9; row 1 (A = -1): ratios 0.5, (1.1 on padding)
OLD = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]])
LOGP = OLD + torch.tensor([[ln(1.5), ln(0.9)], [ln(0.5), ln(1.1)]])
ADV = torch.tensor([1.0, -1.0])


def test_grpo_hand_values_for_each_loss_type():
    """eps = 0.2. Per token -min(r A, clip(r, .8, 1.2) A):
    row 0, A = 1:  r = 1.5 -> -min(1.5, 1.2) = -1.2;  r = 0.9 -> -0.9
    row 1, A = -1: r = 0.5 -> -min(-0.5, -0.8) = 0.8
    dapo / bnpo: (-1.2 - 0.9 + 0.8) / 3;  grpo: ((-1.2 - 0.9) / 2 + 0.8) / 2;
    dr_grpo (L = 4): (-1.3) / (2 * 4). Clipped: low (r < .8, A < 0) 1 token, high (r > 1.2, A > 0) 1."""
    expected = {"dapo": -1.3 / 3, "bnpo": -1.3 / 3, "grpo": (-1.05 + 0.8) / 2, "dr_grpo": -1.3 / 8}
    for loss_type, value in expected.items():
        loss, metrics = grpo_loss(LOGP, OLD, MASK, ADV, loss_type=loss_type, max_completion_length=4)
        close(loss, value)
        assert metrics == {
            "loss": approx(value),
            "clip_ratio/low": approx(1 / 3),
            "clip_ratio/high": approx(1 / 3),
            "clip_ratio/region": approx(2 / 3),
        }


def test_grpo_asymmetric_clip():
    """eps_high = 0.6: r = 1.5 is no longer clipped: row 0 gives -1.5 - 0.9; eps_low = 0.6: r = 0.5
    with A = -1 is clipped at 0.4 -> -min(-0.5, -0.4) = 0.5."""
    loss, metrics = grpo_loss(LOGP, OLD, MASK, ADV, epsilon_high=0.6)
    close(loss, (-1.5 - 0.9 + 0.8) / 3)
    assert metrics["clip_ratio/high"] == 0.0
    loss, metrics = grpo_loss(LOGP, OLD, MASK, ADV, epsilon_low=0.6)
    close(loss, (-1.2 - 0.9 + 0.5) / 3)
    assert metrics["clip_ratio/low"] == 0.0


def test_gspo_sequence_level_hand_value():
    """Sequence ratio = exp(mean_t log r): row 0: sqrt(1.5 * 0.9) = 1.16190 (inside [0.8, 1.2]),
    row 1: 0.5 (its padding token is ignored) -> clipped to 0.8 with A = -1.
    grpo aggregation: (-sqrt(1.35) + 0.8) / 2. Clip fractions are over sequences, as in TRL."""
    loss, metrics = grpo_loss(LOGP, OLD, MASK, ADV, loss_type="grpo", importance_sampling_level="sequence")
    close(loss, (-math.sqrt(1.35) + 0.8) / 2)
    assert metrics["clip_ratio/low"] == approx(0.5) and metrics["clip_ratio/high"] == 0.0


def test_grpo_k3_kl_hand_value():
    """ratio 1 (logp = old), A = 0, beta = 0.1, ref - logp = d: KL = e^d - d - 1 per token.
    d = [[0.5, -0.5], [1.0, pad]]: loss = 0.1 * (KL(.5) + KL(-.5) + KL(1)) / 3."""
    d = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    kl = [math.exp(v) - v - 1 for v in (0.5, -0.5, 1.0)]
    loss, metrics = grpo_loss(OLD, OLD, MASK, torch.zeros(2), ref_logprobs=OLD + d, beta=0.1)
    close(loss, 0.1 * sum(kl) / 3)
    assert metrics["kl"] == approx(sum(kl) / 3)


def test_grpo_ratio_one_is_reinforce():
    """logp == old_logp, beta = 0: value = token mean of -A (the REINFORCE surrogate
    -A exp(logp - sg(logp))), gradient = gradient of -A * logp (token mean): no clipping applies."""
    torch.manual_seed(2)
    logp0 = -torch.rand(3, 4) * 2
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([0.5, -1.5, 2.0])
    x = logp0.clone().requires_grad_(True)
    x_ref = logp0.clone().requires_grad_(True)
    loss, metrics = grpo_loss(x, logp0, mask, adv)
    reinforce = (-adv[:, None] * x_ref * mask).sum() / mask.sum()
    close(loss, (-adv[:, None] * mask).sum() / mask.sum())
    loss.backward()
    reinforce.backward()
    close(x.grad, x_ref.grad)
    assert metrics["clip_ratio/region"] == 0.0
    # old_logprobs=None means "the same policy"
    close(grpo_loss(logp0, None, mask, adv)[0], loss.detach())


def test_grpo_micro_batches_add_up_to_the_full_batch():
    """With the step's counts passed in, grpo/dapo/dr_grpo micro-batch losses sum to the
    full-batch loss; bnpo sums to the mean of the micro-batch token means (TRL's accumulation)."""
    torch.manual_seed(3)
    logp, old, ref = -torch.rand(4, 6), -torch.rand(4, 6), -torch.rand(4, 6)
    mask = (torch.rand(4, 6) > 0.4).float()
    adv = torch.randn(4)
    halves = (slice(0, 2), slice(2, 4))

    def loss(s, loss_type, **counts):
        return grpo_loss(
            logp[s], old[s], mask[s], adv[s], ref_logprobs=ref[s], beta=0.05,
            loss_type=loss_type, max_completion_length=8, **counts,
        )[0]  # fmt: skip

    for loss_type in ("grpo", "dapo", "dr_grpo", "bnpo"):
        parts = sum(loss(s, loss_type, token_normalizer=mask.sum(), sequence_normalizer=4) for s in halves)
        if loss_type == "bnpo":
            close(parts, sum(loss(s, "bnpo") for s in halves) / 2)
        else:
            close(parts, loss(slice(0, 4), loss_type))


def test_grpo_errors():
    with pytest.raises(ValueError, match="unknown loss_type 'ppo'; valid: grpo, dapo, dr_grpo, bnpo"):
        grpo_loss(LOGP, OLD, MASK, ADV, loss_type="ppo")
    with pytest.raises(ValueError, match="unknown importance_sampling_level 'group'"):
        grpo_loss(LOGP, OLD, MASK, ADV, importance_sampling_level="group")
    with pytest.raises(ValueError, match="dr_grpo' needs max_completion_length"):
        grpo_loss(LOGP, OLD, MASK, ADV, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="beta=0.1 needs ref_logprobs"):
        grpo_loss(LOGP, OLD, MASK, ADV, beta=0.1)


# ----------------------------------------------------------------------------- GIFT


def _gift_inputs(k, T=3, seed=0):
    """Token log-probs whose masked sums minus the reference's give implicit rewards ``k``."""
    torch.manual_seed(seed)
    ref = -torch.rand(len(k), T)
    mask = torch.ones(len(k), T)
    logp = ref + torch.tensor(k)[:, None] / T
    return logp, ref, mask


def test_gift_hand_value_and_metrics():
    """R = [1, 0, 0]: mean 1/3, std 1/sqrt(3): a = [2/3, -1/3, -1/3] / (1/sqrt(3) + eps).
    k = [3, 1, 2]: mean 2, std 1: z = [1, -1, 0] / (1 + eps).   loss = mean (a - z)^2.
    corr(a, k): centred a ~ [2, -1, -1], centred k = [1, -1, 0] -> 3 / (sqrt(6) sqrt(2)) = sqrt(3)/2.
    beta(x) = std(R) / std(k) = 1/sqrt(3)."""
    logp, ref, mask = _gift_inputs([3.0, 1.0, 2.0])
    loss, metrics = gift_loss(logp, ref, mask, [1.0, 0.0, 0.0], 3)
    s3, eps = math.sqrt(3), 1e-6
    a = [v / (1 / s3 + eps) for v in (2 / 3, -1 / 3, -1 / 3)]
    z = [v / (1 + eps) for v in (1, -1, 0)]
    expected = sum((ai - zi) ** 2 for ai, zi in zip(a, z)) / 3
    close(loss, expected)
    assert metrics["loss"] == approx(expected)
    assert metrics["mse"] == approx(expected)
    assert metrics["implicit_reward_mean"] == approx(2.0)
    assert metrics["implicit_reward_std"] == approx(1.0)
    assert metrics["k_degenerate_frac"] == 0.0
    assert metrics["corr_a_k"] == approx(s3 / 2)
    assert metrics["beta_x_median"] == approx(1 / s3)


def test_gift_beta_scales_the_implicit_side():
    """beta = 2, same a and z as above: loss = mean (a - 2 z)^2."""
    logp, ref, mask = _gift_inputs([3.0, 1.0, 2.0])
    s3, eps = math.sqrt(3), 1e-6
    a = [v / (1 / s3 + eps) for v in (2 / 3, -1 / 3, -1 / 3)]
    z = [v / (1 + eps) for v in (1, -1, 0)]
    expected = sum((ai - 2 * zi) ** 2 for ai, zi in zip(a, z)) / 3
    close(gift_loss(logp, ref, mask, [1.0, 0.0, 0.0], 3, beta=2.0)[0], expected)


def test_gift_gradient_flows_through_k_not_through_group_statistics():
    """With detached mean m and std s of k (per group):
        d loss / d k_i = -(2 beta / N) (a_i - beta z_i) / (s + eps),
    and d k_i / d logp_{i,t} = mask_{i,t}. If the statistics were not detached, the gradient
    would be projected (d z / d k has the -1/G and -z z^T/(G-1) terms) and differ."""
    torch.manual_seed(4)
    N, G, T, beta, eps = 6, 3, 4, 0.7, 1e-6
    ref = -torch.rand(N, T)
    logp = (ref + torch.randn(N, T)).requires_grad_(True)
    mask = (torch.rand(N, T) > 0.3).float()
    mask[:, 0] = 1
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0])
    gift_loss(logp, ref, mask, rewards, G, beta=beta)[0].backward()

    k = ((logp.detach() - ref) * mask).sum(-1).view(-1, G)
    m, s = k.mean(-1, keepdim=True), k.std(-1, keepdim=True)
    z = (k - m) / (s + eps)
    r = rewards.view(-1, G)
    a = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)
    dk = (-2 * beta / N) * (a - beta * z) / (s + eps)
    close(logp.grad, dk.view(-1, 1) * mask)

    kk = k.clone().requires_grad_(True)  # the non-detached version gives another gradient
    z_full = (kk - kk.mean(-1, keepdim=True)) / (kk.std(-1, keepdim=True) + eps)
    ((a - beta * z_full) ** 2).mean().backward()
    assert (kk.grad - dk).abs().max() > 1e-2


def test_gift_degeneracy_all_k_equal_and_std_floor():
    """All k equal (first step with the 'old' reference): z = 0, loss = mean a^2, and
    d loss / d k_i = -(2 beta / N) a_i / (0 + eps): the 1/eps scaling is kept by default.
    std_floor = 0.5 bounds it: -(2 beta / N) a_i / (0.5 + eps)."""
    ref = -torch.rand(3, 2)
    logp = ref.clone().requires_grad_(True)  # k = 0 for everyone
    mask = torch.ones(3, 2)
    a = torch.tensor([2 / 3, -1 / 3, -1 / 3]) / (1 / math.sqrt(3) + 1e-6)
    loss, metrics = gift_loss(logp, ref, mask, [1.0, 0.0, 0.0], 3)
    close(loss, (a**2).mean())
    assert (
        metrics["k_degenerate_frac"] == 1.0 and "corr_a_k" not in metrics and "beta_x_median" not in metrics
    )
    loss.backward()
    close(logp.grad, (-(2 / 3) * a / 1e-6)[:, None].expand(3, 2), atol=0)
    logp.grad = None
    gift_loss(logp, ref, mask, [1.0, 0.0, 0.0], 3, std_floor=0.5)[0].backward()
    close(logp.grad, (-(2 / 3) * a / (0.5 + 1e-6))[:, None].expand(3, 2), atol=0)


def test_gift_unjudged_reward_has_target_zero():
    """R = [1, None, 0]: judged mean 1/2, std sqrt(1/2): a = [1/2, 0, -1/2] / (sqrt(1/2) + eps).
    k = [3, 1, 2]: z = [1, -1, 0] / (1 + eps): loss = mean (a - z)^2, the unjudged member's target is 0."""
    logp, ref, mask = _gift_inputs([3.0, 1.0, 2.0])
    eps = 1e-6
    a = [v / (math.sqrt(0.5) + eps) for v in (0.5, 0.0, -0.5)]
    z = [v / (1 + eps) for v in (1, -1, 0)]
    expected = sum((ai - zi) ** 2 for ai, zi in zip(a, z)) / 3
    close(gift_loss(logp, ref, mask, [1.0, None, 0.0], 3)[0], expected)
    close(gift_loss(logp, ref, mask, torch.tensor([1.0, float("nan"), 0.0]), 3)[0], expected)


def test_gift_micro_batches_add_up():
    logp, ref, mask = _gift_inputs([3.0, 1.0, 2.0, 0.5, 0.0, -1.0])
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    full = gift_loss(logp, ref, mask, rewards, 3)[0]
    parts = [
        gift_loss(logp[s], ref[s], mask[s], rewards[s], 3, sequence_normalizer=6)[0]
        for s in (slice(0, 3), slice(3, 6))
    ]
    close(sum(parts), full)


def test_gift_errors():
    logp, ref, mask = _gift_inputs([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="group_size >= 2"):
        gift_loss(logp, ref, mask, [1.0, 0.0, 1.0, 0.0], 1)
    with pytest.raises(ValueError, match="4 responses is not a whole number of groups of 3"):
        gift_loss(logp, ref, mask, [1.0, 0.0, 1.0, 0.0], 3)
    with pytest.raises(ValueError, match="got 3 rewards for 4 responses"):
        gift_loss(logp, ref, mask, [1.0, 0.0, 1.0], 2)


# ----------------------------------------------------------------------------- DPO / UNA


def test_dpo_hand_value():
    """pair 0: (lc - rc) - (lr - rr) = 0.5 - (-1) = 1.5; pair 1: 0 - 1 = -1; beta = 0.1:
    loss = (log(1 + e^-0.15) + log(1 + e^0.1)) / 2; rewards: chosen [0.05, 0], rejected [-0.1, 0.1]."""
    c, r = torch.tensor([-1.0, -2.0], requires_grad=True), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0])
    loss, metrics = dpo_loss(c, r, rc, rr, beta=0.1)
    expected = (math.log1p(math.exp(-0.15)) + math.log1p(math.exp(0.1))) / 2
    close(loss, expected)
    assert metrics == {
        "loss": approx(expected),
        "reward_chosen": approx(0.025),
        "reward_rejected": approx(0.0),
        "reward_margin": approx(0.025),
        "reward_accuracy": 0.5,
    }
    loss.backward()  # d/d lc = -beta * sigmoid(-beta * delta) / P
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    close(c.grad, [-0.1 * sig(-0.15) / 2, -0.1 * sig(0.1) / 2])


def test_una_hand_value():
    """sigmoid(0.1 * 0.5) = 0.512497 vs s = 1; sigmoid(0) = 0.5 vs s = 0:
    loss = ((1 - sigmoid(0.05))^2 + 0.25) / 2."""
    loss, metrics = una_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0]), [1.0, 0.0], beta=0.1)
    expected = ((1 - 1 / (1 + math.exp(-0.05))) ** 2 + 0.25) / 2
    close(loss, expected)
    assert metrics == {"loss": approx(expected), "implicit_reward_mean": approx(0.025), "score_mean": 0.5}


# ----------------------------------------------------------------------------- shared edge cases


def _all_losses(logp, other, mask):
    """Every token-level loss on (logp, mask); ``other`` plays old / ref log-probs."""
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    yield "sft", sft_loss(logp, mask)
    yield "dft", dft_loss(logp, mask)
    yield "gft", gft_loss(logp, mask, adv, tau=0.5)
    for loss_type in ("grpo", "dapo", "dr_grpo", "bnpo"):
        for level in ("token", "sequence"):
            yield f"{loss_type}/{level}", grpo_loss(
                logp, other, mask, adv, ref_logprobs=other, beta=0.04,
                loss_type=loss_type, importance_sampling_level=level, max_completion_length=5,
            )  # fmt: skip
    yield "gift", gift_loss(logp, other, mask, [1.0, 0.0, 0.0, 1.0], 2)


def test_fully_masked_rows_and_garbage_padding_give_no_nan():
    """Row 1 is fully masked and padding holds -inf / NaN: value, metrics and gradient stay finite,
    the masked positions get exactly zero gradient. A fully masked call gives a zero loss."""
    torch.manual_seed(5)
    mask = torch.tensor(
        [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32
    )
    base = -torch.rand(4, 5)
    other = torch.where(mask > 0, -torch.rand(4, 5), float("nan"))
    base[1] = float("-inf")
    base[0, 3] = float("nan")
    for name, (loss, metrics) in _all_losses(base.clone().requires_grad_(True), other, mask):
        assert torch.isfinite(loss), name
        assert all(math.isfinite(v) for v in metrics.values()), name
    for name, _ in _all_losses(base, other, mask):
        x = base.clone().requires_grad_(True)
        loss = dict(_all_losses(x, other, mask))[name][0]
        loss.backward()
        assert torch.isfinite(x.grad).all(), name
        assert (x.grad[mask == 0] == 0).all(), name
    zero = torch.zeros(4, 5)
    for name, (loss, _) in _all_losses(base, other, zero):
        assert loss.item() == 0.0 or name == "gift", name  # gift: mean a^2 of a zero-k group


def test_bf16_inputs_compute_in_float32():
    """bf16 log-probs give a float32 loss equal to the loss of the same values upcast."""
    torch.manual_seed(6)
    mask = torch.ones(4, 5)
    logp = (-torch.rand(4, 5)).bfloat16()
    other = (-torch.rand(4, 5)).bfloat16()
    for (name, (loss16, _)), (_, (loss32, _)) in zip(
        _all_losses(logp, other, mask), _all_losses(logp.float(), other.float(), mask)
    ):
        assert loss16.dtype == torch.float32, name
        torch.testing.assert_close(loss16, loss32, rtol=0, atol=0, msg=name)
    loss, _ = dpo_loss(*(torch.tensor([-1.0, -2.0]).bfloat16() for _ in range(4)))
    assert loss.dtype == torch.float32


def test_inputs_are_not_modified():
    torch.manual_seed(7)
    mask = torch.ones(4, 5)
    mask[1, 3:] = 0
    logp, other = -torch.rand(4, 5), -torch.rand(4, 5)
    before = (logp.clone(), other.clone(), mask.clone())
    list(_all_losses(logp, other, mask))
    for t, b in zip((logp, other, mask), before):
        torch.testing.assert_close(t, b, rtol=0, atol=0)
