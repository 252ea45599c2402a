"""The GFT paper's other baselines (ASFT, PSFT, LUFFY, CHORD) and GRPO's dual clip: hand-worked
values on small tensors and autograd against the closed-form gradients.

The agreement with each official implementation is in ``test_official_parity.py``.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grouptune.logprobs import selective_log_softmax
from grouptune.losses import asft_loss, chord_loss, chord_mu, grpo_loss, luffy_loss, psft_loss, vocab_kl

ln = math.log


def close(actual, expected, rtol=1e-6, atol=1e-7):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=rtol, atol=atol)


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-7)


def leaf(values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


# ----------------------------------------------------------------------------- GRPO dual clip


def test_dual_clip_hand_values_and_gradient():
    """One token per row, ratios [2, 5, 5, 0.5], A [-1, -1, 1, -1], clip 0.2, c = 3:
    PPO losses [2, 5, -1.2, 0.8]; the dual clip caps the second (A < 0) at -A * c = 3 and leaves
    the third (A > 0) alone: mean (2 + 3 - 1.2 + 0.8) / 4 = 1.15 (1.65 without).
    d/dlogp: row 0 -A * rho / 4 = 0.5; the dual-clipped and the clipped rows get 0."""
    old = torch.full((4, 1), -3.0)
    logp = (old + torch.tensor([[ln(2)], [ln(5)], [ln(5)], [ln(0.5)]])).requires_grad_()
    adv, mask = torch.tensor([-1.0, -1.0, 1.0, -1.0]), torch.ones(4, 1)
    loss, metrics = grpo_loss(logp, old, mask, adv, dual_clip=3.0)
    close(loss, 1.15)
    assert metrics["clip_ratio/dual"] == approx(0.25)
    loss.backward()
    close(logp.grad, [[0.5], [0.0], [0.0], [0.0]])
    plain, plain_metrics = grpo_loss(logp.detach(), old, mask, adv)
    close(plain, 1.65)
    assert "clip_ratio/dual" not in plain_metrics  # off by default: the metrics of every existing run stay


def test_dual_clip_sequence_level_and_errors():
    """GSPO's sequence ratio (exp of the mean log-ratio, here 4) with A = -1 is capped at c = 3."""
    old = torch.zeros(1, 2)
    logp = torch.tensor([[ln(2), ln(8)]])
    loss, _ = grpo_loss(logp, old, torch.ones(1, 2), torch.tensor([-1.0]), dual_clip=3.0,
                        importance_sampling_level="sequence", loss_type="grpo")  # fmt: skip
    close(loss, 3.0)
    with pytest.raises(ValueError, match="dual_clip must be greater than 1"):
        grpo_loss(logp, old, torch.ones(1, 2), torch.tensor([-1.0]), dual_clip=1.0)


def test_log_ratio_clip_caps_the_ratio_and_stops_its_gradient():
    """log-ratio 25 is clamped to 20 (A = -1, no PPO clip reached below): loss e^20, no gradient;
    log-ratio 0.1 is inside: gradient -A * e^0.1."""
    old = torch.zeros(2, 1)
    logp = leaf([[25.0], [0.1]])
    loss, _ = grpo_loss(logp, old, torch.ones(2, 1), torch.tensor([-1.0, -1.0]), epsilon_high=1e9,
                        loss_type="grpo", log_ratio_clip=20.0)  # fmt: skip
    close(loss, (math.exp(20) + math.exp(0.1)) / 2, rtol=1e-6)
    loss.backward()
    close(logp.grad, [[0.0], [math.exp(0.1) / 2]])


# ----------------------------------------------------------------------------- ASFT


def test_vocab_kl_hand_value_and_gradient():
    """p = softmax([0, ln 2, 0]) = [1/4, 1/2, 1/4], q = uniform 1/3:
    KL(q || p) = (2 ln(4/3) + ln(2/3)) / 3; d KL / d logits = p - q."""
    logits = torch.tensor([[0.0, ln(2), 0.0]], requires_grad=True)
    kl = vocab_kl(logits, torch.zeros(1, 3))
    close(kl, [(2 * ln(4 / 3) + ln(2 / 3)) / 3])
    kl.sum().backward()
    close(logits.grad, [[1 / 4 - 1 / 3, 1 / 2 - 1 / 3, 1 / 4 - 1 / 3]])


@pytest.mark.parametrize("chunk", [1, 3, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vocab_kl_equals_kl_div_and_its_gradient_is_softmax_difference(chunk, dtype):
    """Random logits, sliced like the trainer's ``logits[:, :-1]`` (not viewable as rows): the value of
    ``F.kl_div(log_softmax(x), softmax(r))`` and the gradient ``w * (softmax(x) - softmax(r))``."""
    gen = torch.Generator().manual_seed(0)
    full = (torch.randn(3, 6, 11, generator=gen) * 3).to(dtype).requires_grad_()
    ref_full = (torch.randn(3, 6, 11, generator=gen) * 3).to(dtype)
    x, r = full[:, :-1], ref_full[:, :-1]
    w = torch.randn(3, 5, generator=gen)
    kl = vocab_kl(x, r, chunk_size=chunk)
    expected = F.kl_div(F.log_softmax(x.float(), -1), F.softmax(r.float(), -1), reduction="none").sum(-1)
    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl, expected.detach(), **tol)
    (w * kl).sum().backward()
    analytic = w[..., None] * (torch.softmax(x.float(), -1) - torch.softmax(r.float(), -1))
    torch.testing.assert_close(full.grad[:, :-1].float(), analytic.detach().to(dtype).float(), **tol)
    assert full.grad[:, -1].abs().sum() == 0 and full.grad.dtype == dtype
    assert not r.requires_grad


def test_vocab_kl_is_zero_for_equal_distributions_and_checks_shapes():
    x = torch.randn(4, 7)
    close(vocab_kl(x, x + 5.0), torch.zeros(4), atol=1e-6)  # a shift of the logits is the same distribution
    with pytest.raises(ValueError, match="differ in shape"):
        vocab_kl(x, x[:, :6])


def test_asft_hand_value_and_gradient_wrt_logits():
    """One demo token (label 1) with p = softmax([0, ln 2, 0]), reference uniform, lambda = 0.1:
    loss = -0.5 ln 0.5 + 0.1 * KL; d loss / d logits = -sg(p_y) (onehot_y - p) + 0.1 (p - q)."""
    logits = torch.tensor([[[0.0, ln(2), 0.0]]], requires_grad=True)
    label = torch.tensor([[1]])
    logp = selective_log_softmax(logits, label)
    kl = vocab_kl(logits, torch.zeros(1, 1, 3))
    loss, metrics = asft_loss(logp, torch.ones(1, 1), kl, kl_coef=0.1)
    kl_value = (2 * ln(4 / 3) + ln(2 / 3)) / 3
    close(loss, -0.5 * ln(0.5) + 0.1 * kl_value)
    assert metrics == {"loss": approx(-0.5 * ln(0.5) + 0.1 * kl_value), "kl": approx(kl_value), "weight_mean": approx(0.5)}
    loss.backward()
    p, q = torch.tensor([0.25, 0.5, 0.25]), torch.full((3,), 1 / 3)
    close(logits.grad, (-0.5 * (torch.tensor([0.0, 1.0, 0.0]) - p) + 0.1 * (p - q)).view(1, 1, 3))


def test_asft_masks_padding_and_normalises_by_the_step():
    """Two tokens count (the padded KL is NaN and must not leak): (dft + 0.1 * kl) summed over them / 8."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 9.0]])
    kl = torch.tensor([[0.3, 0.1], [0.2, float("nan")]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, _ = asft_loss(logp, mask, kl, kl_coef=0.1, token_normalizer=8)
    close(loss, (math.exp(-1) * 1 + 0.03 + math.exp(-0.5) * 0.5 + 0.02) / 8)


# ----------------------------------------------------------------------------- PSFT


def test_psft_hand_value_and_gradient():
    """Ratios [[1, 1.5], [0.9, pad]], A = 1, clip (0.8, 1.28): token losses [-1, -1.28], [-0.9];
    per-sequence means -1.14, -0.9, mean -1.02. Gradient -rho / (len_i * 2) where unclipped:
    (0, 0) -1/4, (0, 1) clipped 0, (1, 0) -0.9/2."""
    old = torch.full((2, 2), -2.0)
    logp = (old + torch.tensor([[0.0, ln(1.5)], [ln(0.9), 0.0]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, metrics = psft_loss(logp, old, mask)
    close(loss, -1.02)
    assert metrics["clip_ratio/high"] == approx(1 / 3) and metrics["clip_ratio/low"] == 0.0
    loss.backward()
    close(logp.grad, [[-0.25, 0.0], [-0.45, 0.0]])


def test_psft_first_step_is_sft():
    """old = None (the first optimizer step of a batch): ratio 1, gradient of the per-sequence mean of -logp."""
    logp = leaf([[-1.0, -2.0], [-0.5, -3.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = psft_loss(logp, None, mask)
    close(loss, -1.0)  # every token -rho = -1
    loss.backward()
    close(logp.grad, [[-0.25, -0.25], [-0.5, 0.0]])


# ----------------------------------------------------------------------------- LUFFY


def test_luffy_hand_value():
    """Row 0 the demonstration (p = [0.4, 0.1], A = 0.5): -0.5 (0.4/0.5 + 0.1/0.2) = -0.65;
    row 1 a rollout (ratio 1.2 on its one token, A = -0.5): +0.6; sum / 10 = -0.005.
    Entropy [[1, 2], [3, pad]]: token mean 2, bonus -0.001 * 2."""
    logp = torch.tensor([[ln(0.4), ln(0.1)], [ln(0.3), 0.0]])
    old = torch.tensor([[0.0, 0.0], [ln(0.3) - ln(1.2), 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 50.0]])
    on_policy = torch.tensor([False, True])
    adv = torch.tensor([0.5, -0.5])
    loss, metrics = luffy_loss(logp, old, mask, adv, on_policy, normalizer=10.0, entropy=entropy)
    close(loss, -0.005 - 0.002)
    assert metrics["pg_loss"] == approx(-0.005) and metrics["entropy_bonus"] == approx(2.0)
    assert metrics["off_policy_prob"] == approx(0.25) and metrics["off_ratio_mean"] == approx(0.65)
    no_demo = luffy_loss(logp[1:], old[1:], mask[1:], adv[1:], on_policy[1:], normalizer=10.0)[1]
    assert "off_policy_prob" not in no_demo and "entropy_bonus" not in no_demo


def test_luffy_gradient_is_the_shaping_derivative_and_the_unclipped_ratio():
    """Random tokens: d/dlogp on demonstration tokens -A * 0.1 p / (p + 0.1)^2 / C (f'(p) * dp/dlogp);
    on rollout tokens -A * rho / C with no clip however far rho is from 1; entropy -coef / n_tok."""
    gen = torch.Generator().manual_seed(1)
    N, T, C = 6, 5, 37.0
    logp = (-torch.rand(N, T, generator=gen) * 4).requires_grad_()
    old = logp.detach() + torch.randn(N, T, generator=gen)  # ratios e^{±2}: far outside any clip range
    mask = (torch.rand(N, T, generator=gen) > 0.3).float()
    entropy = torch.rand(N, T, generator=gen).requires_grad_()
    on_policy = torch.tensor([False, True, True, False, True, True])
    adv = torch.randn(N, generator=gen)
    loss, _ = luffy_loss(logp, old, mask, adv, on_policy, normalizer=C, entropy=entropy, entropy_coef=0.01)
    loss.backward()
    p, rho, A = logp.detach().exp(), (logp.detach() - old).exp(), adv[:, None]
    expected = torch.where(on_policy[:, None], -A * rho, -A * 0.1 * p / (p + 0.1) ** 2) / C * mask
    torch.testing.assert_close(logp.grad, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(entropy.grad, -0.01 * mask / mask.sum(), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- CHORD


def test_chord_mu_schedule():
    """Warm-up, cosine decay, valley; warm-up = decay = 0 is the valley from the first step."""
    assert chord_mu(1, 0, 0, 0.1, 0.1) == 0.1 and chord_mu(1000, 0, 0, 0.1, 0.1) == 0.1
    assert chord_mu(50, 100, 100, 0.5, 0.02) == approx(0.25)  # half-way up the warm-up
    assert chord_mu(100, 100, 100, 0.5, 0.02) == approx(0.5)  # the peak
    assert chord_mu(150, 100, 100, 0.5, 0.02) == approx(0.26)  # half-way down: (peak + valley) / 2
    assert chord_mu(200, 100, 100, 0.5, 0.02) == 0.02
    assert chord_mu(1, 0, 200, 0.9, 0.05) == approx(0.05 + 0.85 * (1 + math.cos(math.pi / 200)) / 2)  # chord_mu
    assert chord_mu(200, 0, 200, 0.9, 0.05) == 0.05


@pytest.mark.parametrize("phi", [True, False])
def test_chord_hand_value(phi):
    """Rollouts: ratio 1, A = 1, two tokens: L_rl = -1. Expert tokens p = [0.5, 0.9]:
    CHORD-phi L_sft = -(0.25 ln 0.5 + 0.09 ln 0.9) / 2, CHORD-mu -(ln 0.5 + ln 0.9) / 2;
    mu = 0.1: L = 0.9 * L_rl + 0.1 * L_sft."""
    logp = leaf([[-0.3, -1.2]])
    e_logp = leaf([[ln(0.5), ln(0.9)]])
    loss, metrics = chord_loss(logp, None, torch.ones(1, 2), torch.tensor([1.0]), e_logp, torch.ones(1, 2),
                               mu=0.1, phi=phi)  # fmt: skip
    w = [0.25, 0.09] if phi else [1.0, 1.0]
    sft = -(w[0] * ln(0.5) + w[1] * ln(0.9)) / 2
    close(loss, 0.9 * -1.0 + 0.1 * sft)
    assert metrics["rl_loss"] == approx(-1.0) and metrics["sft_loss"] == approx(sft) and metrics["mu"] == 0.1
    assert ("phi_mean" in metrics) == phi and "clip_ratio/dual" in metrics
    loss.backward()
    close(logp.grad, [[-0.9 / 2, -0.9 / 2]])
    close(e_logp.grad, [[-0.1 * w[0] / 2, -0.1 * w[1] / 2]])


def test_chord_phi_gradient_wrt_logits_is_analytic():
    """L_sft = -sum_t sg(p_t (1 - p_t)) log p_t / n: d/dz_t = -p_t (1 - p_t) (onehot_y - softmax(z_t)) / n."""
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 3, 7, generator=gen, requires_grad=True)
    y = torch.randint(0, 7, (2, 3), generator=gen)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    e_logp = selective_log_softmax(z, y)
    rl_logp = torch.zeros(1, 1, requires_grad=True)
    loss, _ = chord_loss(rl_logp, None, torch.ones(1, 1), torch.zeros(1), e_logp, mask, mu=1.0, phi=True)
    loss.backward()
    soft = torch.softmax(z.detach(), -1)
    p = soft.gather(-1, y[..., None])
    expected = -p * (1 - p) * (F.one_hot(y, 7) - soft) / mask.sum() * mask[..., None]
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-7)
    assert rl_logp.grad.abs().sum() == 0  # mu = 1: nothing from the RL part


def test_rollout_engine_weights_scale_only_the_policy_gradient_terms():
    """Truncated importance weights (vLLM) multiply LUFFY's token losses, not its entropy bonus, and
    CHORD's GRPO part, not its SFT part: with weights w and ratio 1, LUFFY's on-policy token loss is -A w."""
    logp = torch.tensor([[ln(0.5), ln(0.2)], [ln(0.4), ln(0.3)]])
    mask, w = torch.ones(2, 2), torch.tensor([[1.0, 1.0], [0.5, 2.0]])
    adv, on_policy, entropy = torch.tensor([1.0, -1.0]), torch.tensor([False, True]), torch.ones(2, 2)
    loss, _ = luffy_loss(logp, None, mask, adv, on_policy, normalizer=4.0, entropy=entropy, token_weights=w)
    close(loss, (-(0.5 / 0.6 + 0.2 / 0.3) + (0.5 + 2.0)) / 4 - 0.001 * 1.0)
    e_logp = torch.tensor([[ln(0.5)]])
    weighted, m1 = chord_loss(logp, None, mask, adv, e_logp, torch.ones(1, 1), mu=0.25, phi=False, token_weights=w)
    plain, m0 = chord_loss(logp, None, mask, adv, e_logp, torch.ones(1, 1), mu=0.25, phi=False)
    assert m1["sft_loss"] == m0["sft_loss"] == approx(-ln(0.5))
    assert m0["rl_loss"] == approx(0.0) and m1["rl_loss"] == approx((-2.0 + 2.5) / 4)  # -A w summed / 4 tokens
    close(weighted - plain, 0.75 * (m1["rl_loss"] - m0["rl_loss"]))
