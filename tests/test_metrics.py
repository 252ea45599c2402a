"""Evaluation arithmetic with hand-worked numbers."""

import math
from fractions import Fraction
from math import comb

import pytest

from grouptune.metrics import format_table, pass_at_k, summarize_eval


def test_pass_at_k_hand_worked():
    """n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7; n=4, c=1, k=1: c/n = 0.25."""
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25, abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # only 2 wrong samples: any 3 contain a correct one
    assert pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize("n,c,k", [(16, 3, 4), (16, 1, 16), (64, 10, 8), (500, 3, 100)])
def test_pass_at_k_matches_exact_binomial(n, c, k):
    """The stable product equals the exact rational 1 - C(n-c,k)/C(n,k), even for n=500."""
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_summarize_eval_hand_worked():
    """Problem 1: 1 of 4 right; problem 2: 4 of 4 right; k = 2.

    avg@2 = (1/4 + 1) / 2 = 0.625; pass@2 = ((1 - C(3,2)/C(4,2)) + 1) / 2 = (0.5 + 1) / 2 = 0.75;
    greedy = 1/2.
    """
    correct = [[True, False, False, False], [True, True, True, True]]
    summary = summarize_eval(correct, [False, True], k=2)
    assert summary == {
        "n_problems": 2,
        "greedy": 0.5,
        "avg@2": pytest.approx(0.625, abs=1e-12),
        "pass@2": pytest.approx(0.75, abs=1e-12),
    }


def test_summarize_eval_without_greedy_and_ragged_counts():
    summary = summarize_eval([[True], [False, True, True]], None, k=1)
    assert "greedy" not in summary
    assert summary["avg@1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    assert summary["pass@1"] == pytest.approx(summary["avg@1"], abs=1e-12)  # pass@1 == avg accuracy


def test_summarize_eval_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one problem"):
        summarize_eval([], None, k=1)
    with pytest.raises(ValueError, match="at least 4 samples"):
        summarize_eval([[True] * 4, [True] * 3], None, k=4)
    with pytest.raises(ValueError, match="greedy_correct has 1 entries for 2"):
        summarize_eval([[True], [True]], [True], k=1)


def test_format_table_markdown():
    results = {
        "math500": {"n_problems": 500, "greedy": 0.5, "avg@4": 0.6125, "pass@4": 0.8},
        "gsm8k": {"n_problems": 3, "avg@4": 1 / 3, "pass@4": 1.0},
    }
    assert format_table(results) == "\n".join(
        [
            "| dataset | n_problems | greedy (%) | avg@4 (%) | pass@4 (%) |",
            "|---|---|---|---|---|",
            "| math500 | 500 | 50.00 | 61.25 | 80.00 |",
            "| gsm8k | 3 | - | 33.33 | 100.00 |",
        ]
    )


def test_summarize_eval_reports_pass_at_more_k():
    """4 samples, 1 and 2 correct: pass@1 (1/4 + 2/4) / 2; pass@2 (1 - C(3,2)/C(4,2) + 1 - C(2,2)/C(4,2)) / 2;
    pass@4 1 for both."""
    summary = summarize_eval([[True, False, False, False], [True, True, False, False]], None, k=4, pass_at=[2, 1])
    assert list(summary) == ["n_problems", "avg@4", "pass@1", "pass@2", "pass@4"]
    assert summary["pass@1"] == pytest.approx(0.375) and summary["pass@2"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert summary["pass@4"] == 1.0
    with pytest.raises(ValueError, match=r"pass_at: each k must be an integer in 1..4"):
        summarize_eval([[True] * 4], None, k=4, pass_at=[8])


def test_engine_mismatch_hand_values_and_truncated_importance_weights():
    """delta = old - engine on sampled tokens (row 0: 0.5 and 0; row 1 is a demonstration: NaN)."""
    import torch

    from grouptune.losses import gft_loss, grpo_loss
    from grouptune.metrics import engine_mismatch

    nan = float("nan")
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    engine = torch.tensor([[-1.5, -2.0, -9.0], [nan, nan, nan]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = engine_mismatch(old, engine, mask, cap=1.5)
    assert r.metrics["rollout/engine_logp_abs_diff"] == pytest.approx(0.25)
    assert r.metrics["rollout/engine_kl"] == pytest.approx((math.exp(0.5) - 0.5 - 1.0) / 2)
    assert r.metrics["rollout/is_capped_frac"] == pytest.approx(0.5)  # exp(0.5) = 1.65 > 1.5
    torch.testing.assert_close(r.weights, torch.tensor([[1.5, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    assert engine_mismatch(old, engine, mask, cap=0).weights is None
    assert engine_mismatch(old, None, mask, cap=2).metrics == {}

    # The weight multiplies each token's policy-gradient term: at ratio 1 the GRPO token loss is
    # -A, so the dapo-aggregated loss is -sum(A * w * m) / sum(m); GFT's is -sum(A * w_gft * w * logp * m) / sum(m).
    adv = torch.tensor([1.0, -2.0])
    logp = old.clone().requires_grad_()
    loss, _ = grpo_loss(logp, old, mask, adv, token_weights=r.weights)
    expected = -(adv[:, None] * r.weights * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    loss, _ = gft_loss(logp, mask, adv, tau=0.0, token_weights=r.weights)  # tau 0: w_gft = 1
    torch.testing.assert_close(loss, -(adv[:, None] * r.weights * old * mask).sum() / mask.sum())
