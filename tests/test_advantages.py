"""grouptune.advantages: hand-worked values for every baseline and scale, and the edge cases.

Running example, G = 4, two groups::

    R = [1, 0, 0, 0 | 1, 1, 0, 0]
    group 1: mean 1/4, deviations [3/4, -1/4, -1/4, -1/4], sum of squares 3/4,
             unbiased var (3/4)/3 = 1/4, std 1/2
    group 2: mean 1/2, deviations [1/2, 1/2, -1/2, -1/2], sum of squares 1, var 1/3, std 1/sqrt(3)
    batch:   mean 3/8, sum of squares 3*(5/8)^2 + 5*(3/8)^2 = 15/8, var (15/8)/7 = 15/56
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grouptune.advantages import group_advantages, group_reward_std

EPS = 1e-6
R = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-6, atol=1e-7)


def test_mean_baseline_group_scale():
    # A = deviation / (std + eps), deviations and stds from the module docstring
    s1, s2 = 0.5 + EPS, 1 / math.sqrt(3) + EPS
    expected = [0.75 / s1, -0.25 / s1, -0.25 / s1, -0.25 / s1, 0.5 / s2, 0.5 / s2, -0.5 / s2, -0.5 / s2]
    close(group_advantages(R, 4), expected)


def test_mean_baseline_batch_scale():
    s = math.sqrt(15 / 56) + EPS  # batch std, group means as baseline
    expected = [0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s, 0.5 / s, 0.5 / s, -0.5 / s, -0.5 / s]
    close(group_advantages(R, 4, scale="batch"), expected)


def test_mean_baseline_no_scale_is_exact_difference():
    # scale "none" divides by exactly 1 (no eps), as Dr. GRPO: A = R - mean_g R
    close(group_advantages(R, 4, scale="none"), [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])


def test_leave_one_out_baseline():
    # b_i = mean of the other three: group 1: b = [0, 1/3, 1/3, 1/3]; group 2: b = [1/3, 1/3, 2/3, 2/3]
    expected = [1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]
    close(group_advantages(R, 4, baseline="leave_one_out", scale="none"), expected)
    s1, s2 = 0.5 + EPS, 1 / math.sqrt(3) + EPS  # the scale is still the group's std
    close(
        group_advantages(R, 4, baseline="leave_one_out"),
        [e / s for e, s in zip(expected, [s1] * 4 + [s2] * 4)],
    )


def test_on_policy_mean_baseline():
    # member 0 of each group is the demonstration (off-policy); b = mean of members 1..3:
    # group 1: mean(0, 0, 0) = 0 -> A = [1, 0, 0, 0]; group 2: mean(1, 0, 0) = 1/3 -> [2/3, 2/3, -1/3, -1/3]
    on_policy = [False, True, True, True] * 2
    expected = [1.0, 0.0, 0.0, 0.0, 2 / 3, 2 / 3, -1 / 3, -1 / 3]
    close(group_advantages(R, 4, baseline="on_policy_mean", scale="none", on_policy_mask=on_policy), expected)
    s1, s2 = 0.5 + EPS, 1 / math.sqrt(3) + EPS
    got = group_advantages(R, 4, baseline="on_policy_mean", on_policy_mask=torch.tensor(on_policy))
    close(got, [e / s for e, s in zip(expected, [s1] * 4 + [s2] * 4)])


def test_on_policy_mean_group_without_judged_on_policy_member_gets_zero():
    r = [1.0, 0.0, None, None]  # the on-policy members (2, 3) are unjudged: no baseline
    got = group_advantages(r, 4, baseline="on_policy_mean", on_policy_mask=[False, False, True, True])
    close(got, [0.0, 0.0, 0.0, 0.0])


def test_all_equal_group_is_exactly_zero_for_every_estimator():
    # 0.1 * 3 / 3 != 0.1 in float32; without care the rounding error / eps would be ~0.01
    r = [0.1, 0.1, 0.1, 0.7, 0.2, 0.4]
    for baseline in ("mean", "leave_one_out", "on_policy_mean"):
        for scale in ("group", "batch", "none"):
            adv = group_advantages(r, 3, baseline=baseline, scale=scale, on_policy_mask=[True] * 6)
            assert adv[:3].tolist() == [0.0, 0.0, 0.0], (baseline, scale)
            assert (adv[3:] != 0).all()


def test_unjudged_rewards_are_excluded_and_get_zero():
    # [1, None, 0, 0]: judged [1, 0, 0], mean 1/3, std 1/sqrt(3)
    s = 1 / math.sqrt(3) + EPS
    expected = [(2 / 3) / s, 0.0, (-1 / 3) / s, (-1 / 3) / s]
    close(group_advantages([1.0, None, 0.0, 0.0], 4), expected)
    close(group_advantages(torch.tensor([1.0, float("nan"), 0.0, 0.0]), 4), expected)
    # a group with one judged member, or none, carries no signal
    close(group_advantages([None, 1.0, None, None, None, None], 3), [0.0] * 6)


def test_unjudged_excluded_from_batch_scale():
    # batch std over the judged [1, 0, 1, 0] = sqrt(1/3); NaN must not poison it
    s = 1 / math.sqrt(3) + EPS
    close(group_advantages([1.0, 0.0, None, 1.0, 0.0, None], 3, scale="batch"), [0.5 / s, -0.5 / s, 0.0] * 2)


def test_group_of_two():
    # [0, 1]: mean 1/2, std sqrt(1/2) -> A = -+ (1/2)/sqrt(1/2) = -+ sqrt(1/2)
    s = math.sqrt(0.5) + EPS
    close(group_advantages([0.0, 1.0], 2), [-0.5 / s, 0.5 / s])


def test_dtypes_and_no_grad():
    r = torch.tensor(R, dtype=torch.float64, requires_grad=True)
    adv = group_advantages(r, 4)
    assert adv.dtype == torch.float64 and not adv.requires_grad
    assert group_advantages([1, 0], 2).dtype == torch.float32
    assert group_advantages(torch.tensor([1, 0]), 2).dtype == torch.float32  # integer rewards


def test_inputs_not_modified():
    r = torch.tensor([1.0, float("nan"), 0.0, 0.0])
    before = r.clone()
    group_advantages(r, 4)
    torch.testing.assert_close(r, before, equal_nan=True)


@pytest.mark.parametrize("group_size", [1, 0])
def test_group_size_below_two_is_refused(group_size):
    with pytest.raises(ValueError, match=f"group_size >= 2.*got {group_size}"):
        group_advantages([1.0, 0.0], group_size)


def test_indivisible_batch_is_refused():
    with pytest.raises(ValueError, match="batch of 5 responses is not a whole number of groups of 2"):
        group_advantages([1.0, 0.0, 1.0, 0.0, 1.0], 2)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown baseline 'median'; valid: leave_one_out, mean, on_policy_mean"
    ):
        group_advantages(R, 4, baseline="median")
    with pytest.raises(ValueError, match="unknown scale 'mad'; valid: batch, group, none"):
        group_advantages(R, 4, scale="mad")


def test_on_policy_mean_needs_the_mask():
    with pytest.raises(ValueError, match="on_policy_mask"):
        group_advantages(R, 4, baseline="on_policy_mean")
    with pytest.raises(ValueError, match=r"on_policy_mask has shape \(3,\), rewards \(8,\)"):
        group_advantages(R, 4, baseline="on_policy_mean", on_policy_mask=[True] * 3)


def test_group_reward_std():
    # stds from the module docstring; an all-equal group is exactly 0 (fraction of zero-spread groups)
    std = group_reward_std(R + [0.1, 0.1, 0.1, None], 4)
    close(std, [0.5, 1 / math.sqrt(3), 0.0])


rewards_st = st.lists(st.one_of(st.none(), st.floats(-10, 10)), min_size=6, max_size=6)


@settings(max_examples=60, deadline=None)
@given(rewards_st, st.floats(0.1, 10), st.floats(-5, 5))
def test_mean_group_advantages_are_centred_and_affine_invariant(rewards, scale, shift):
    """Judged advantages of a group sum to 0, and A(c*R + d) = A(R) for c > 0 up to eps.

    float64 rewards so only eps breaks the invariance: relative effect <= eps / std <= 2e-5 when
    the scaled spread exceeds 0.1 (std >= spread / 2 for three values).
    """
    as_t = lambda rs: torch.tensor([float("nan") if r is None else r for r in rs], dtype=torch.float64)  # noqa: E731
    adv = group_advantages(as_t(rewards), 3)
    moved = group_advantages(as_t([None if r is None else scale * r + shift for r in rewards]), 3)
    for g in range(2):
        group, a = rewards[3 * g : 3 * g + 3], adv[3 * g : 3 * g + 3]
        judged = torch.tensor([r is not None for r in group])
        assert abs(a[judged].sum().item()) < 1e-9
        values = [r for r in group if r is not None]
        spread = (max(values) - min(values)) if values else 0.0
        if spread * min(scale, 1.0) > 0.1:
            torch.testing.assert_close(a, moved[3 * g : 3 * g + 3], rtol=1e-4, atol=1e-6)
