"""The method registry: every registered method's record is coherent, its defaults resolve, its
loss runs; and adding a method really is one ``register`` call."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers_runs import make_cfg

from grouptune.config import ConfigError, MethodConfig, load_config
from grouptune.methods import (
    BASE_DEFAULTS,
    METHODS,
    LossInputs,
    get_method,
    group_plan,
    overlong_penalty,
    register,
    resolve_method,
)
from grouptune.trainer import Trainer


def tiny_inputs(G: int = 4, groups: int = 2, T: int = 5, seed: int = 0) -> LossInputs:
    gen = torch.Generator().manual_seed(seed)
    N = G * groups
    logp = (-torch.rand(N, T, generator=gen) * 3).requires_grad_()
    mask = (torch.rand(N, T, generator=gen) > 0.2).float()
    mask[:, 0] = 1
    rewards = torch.randint(0, 2, (N,), generator=gen).float()
    expert_mask = (torch.rand(3, T, generator=gen) > 0.2).float()
    return LossInputs(
        logp=logp, mask=mask, adv=torch.randn(N, generator=gen), rewards=rewards,
        old_logp=logp.detach() - 0.1 * torch.rand(N, T, generator=gen),
        ref_logp=logp.detach() - 0.2 * torch.rand(N, T, generator=gen),
        group_size=G, max_completion_length=T, tokens=float(mask.sum()), sequences=float(N),
        # what some methods need besides (entropy: LUFFY; ref_kl: ASFT; expert rows: CHORD), each a
        # function of logp so that the gradient reaches it
        entropy=-logp * 0.5, on_policy=torch.arange(N) % G != 0, ref_kl=(logp + 1.0).square(),
        expert_logp=logp[:3] * 0.9, expert_mask=expert_mask, expert_tokens=float(expert_mask.sum()), step=3,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_record_resolves_and_its_loss_runs(name):
    method = get_method(name)
    assert method.name == name and method.summary
    assert method.off_policy in ("none", "demo", "demo+teacher")
    assert method.on_policy or method.off_policy != "none", "a group with no members"
    assert not (method.uses_advantages and not method.on_policy), "advantages need rollouts beside the demonstrations"

    cfg = resolve_method(load_config(overrides={"method.name": name, "rollout.group_size": 8}))
    for key in BASE_DEFAULTS:  # every method-dependent setting has a value after resolution
        assert getattr(cfg.method, key) is not None, key
    K, M = group_plan(method, cfg.method, cfg.rollout)
    assert (K > 0) == (method.off_policy != "none") and (M > 0) == method.on_policy
    assert K + M == (8 if method.on_policy else K)
    assert isinstance(method.needs_old(cfg.method), bool) and isinstance(method.needs_ref_model(cfg.method), bool)

    x = tiny_inputs()
    loss, metrics = method.loss(x, cfg.method)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert x.logp.grad is not None and torch.isfinite(x.logp.grad).all() and x.logp.grad.abs().sum() > 0
    assert metrics and all(isinstance(v, float) for v in metrics.values())


def test_method_defaults_come_from_the_record_and_the_user_wins():
    def resolved(**kw):
        return resolve_method(load_config(overrides={f"method.{k}": v for k, v in kw.items()})).method

    grpo, dapo, gspo = resolved(name="grpo"), resolved(name="dapo"), resolved(name="gspo")
    assert (grpo.loss_type, grpo.epsilon_low, grpo.epsilon_high, grpo.importance_sampling_level) == ("dapo", 0.2, 0.2, "token")
    assert not grpo.dynamic_sampling and grpo.overlong_buffer == 0
    assert (dapo.epsilon_high, dapo.dynamic_sampling) == (0.28, True)
    assert dapo.overlong_buffer == load_config().rollout.max_new_tokens // 4  # a default computed from the config
    assert (gspo.loss_type, gspo.epsilon_low, gspo.epsilon_high, gspo.importance_sampling_level) == (
        "grpo", 3e-4, 4e-4, "sequence")  # fmt: skip
    user = resolved(name="dapo", dynamic_sampling=False, epsilon_high=0.5, overlong_buffer=0)
    assert (user.dynamic_sampling, user.epsilon_high, user.overlong_buffer) == (False, 0.5, 0)
    # resolution copies: the config the user built is not changed
    cfg = load_config(overrides={"method.name": "dapo"})
    resolve_method(cfg)
    assert cfg.method.epsilon_high is None


def test_the_gft_papers_other_baselines_resolve_their_official_defaults():
    def resolved(**kw):
        return resolve_method(load_config(overrides={f"method.{k}": v for k, v in kw.items()})).method

    luffy, grpo = resolved(name="luffy"), resolved(name="grpo")
    assert (luffy.adv_scale, luffy.luffy_normalizer) == ("none", load_config().rollout.max_new_tokens * 8.0)
    assert (grpo.adv_scale, grpo.dual_clip) == ("group", 0.0)  # dual clip off: TRL's GRPO
    psft = resolved(name="psft")
    assert (psft.loss_type, psft.epsilon_low, psft.epsilon_high) == ("grpo", 0.2, 0.28)
    schedule = ("chord_mu_warmup", "chord_mu_decay", "chord_mu_peak", "chord_mu_valley")
    for name, expected in (("chord_phi", (0, 0, 0.1, 0.1)), ("chord_mu", (0, 200, 0.9, 0.05))):
        m = resolved(name=name)
        assert tuple(getattr(m, k) for k in schedule) == expected and (m.dual_clip, m.loss_type) == (3.0, "dapo")
    assert resolved(name="chord_phi", chord_mu_peak=0.3).chord_mu_peak == 0.3
    assert get_method("asft").needs_ref_kl and not get_method("asft").needs_ref_model(resolved(name="asft"))
    assert get_method("chord_mu").expert_stream and get_method("chord_phi").expert_stream
    assert resolved(name="gft", loss_normalizer="micro_batch").loss_normalizer == "micro_batch"
    for bad, message in (({"dual_clip": 0.5}, "method.dual_clip must be 0 .off. or greater than 1"),
                         ({"chord_expert_per_group": 0}, "method.chord_expert_per_group must be >= 1"),
                         ({"name": "luffy", "luffy_normalizer": 0.0}, "method.luffy_normalizer must be positive"),
                         ({"adv_scale": "rank"}, "method.adv_scale: expected group or batch or none"),
                         ({"loss_normalizer": "batch"}, "method.loss_normalizer = 'batch': must be one of 'step', 'micro_batch'")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            resolved(**{"name": "grpo", **bad})


def test_the_resolved_config_is_what_config_yaml_records(tiny_llama, tiny_data, tmp_path):
    import yaml

    Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "gspo", **{"optim.total_batches": 1})).train()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["method"]
    assert (saved["importance_sampling_level"], saved["epsilon_low"], saved["loss_type"]) == ("sequence", 3e-4, "grpo")


def test_bad_method_settings_name_the_setting_and_list_the_registry():
    with pytest.raises(ConfigError, match="method.name: unknown method 'ppo'; valid: sft, sft_mix, dft, gft"):
        resolve_method(load_config(overrides={"method.name": "ppo"}))
    with pytest.raises(ConfigError, match="method.loss_type: expected grpo or dapo or dr_grpo or bnpo, got 'sum'"):
        resolve_method(load_config(overrides={"method.name": "grpo", "method.loss_type": "sum"}))
    with pytest.raises(ConfigError, match="method.importance_sampling_level"):
        resolve_method(load_config(overrides={"method.importance_sampling_level": "group"}))
    with pytest.raises(ValueError, match="defaults for settings without a base default: \\['tau'\\]"):
        register("broken", summary="", off_policy="none", on_policy=True, uses_advantages=True, tempered=True,
                 defaults={"tau": 0.1})(lambda x, m: None)  # fmt: skip
    assert "broken" not in METHODS


def test_overlong_penalty_hand_values():
    """DAPO eq. 13 with L_max = 10, buffer 4: 0 up to 6 tokens, then -(L - 6) / 4 down to -1."""
    lengths = torch.tensor([0, 6, 7, 8, 10, 12])
    torch.testing.assert_close(overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))
    assert overlong_penalty(lengths, 10, 0).abs().sum() == 0


@pytest.fixture
def throwaway_method():
    yield "reinforce_demo"
    METHODS.pop("reinforce_demo", None)


def test_adding_a_method_is_one_register_call(throwaway_method, tiny_llama, tiny_data, tmp_path):
    """A new method in a few lines: REINFORCE with group advantages on rollouts plus the demonstration."""
    calls = []

    @register(throwaway_method, summary="-A log p on the demonstration and rollouts", off_policy="demo",
              on_policy=True, uses_advantages=True, tempered=True, defaults={"overlong_buffer": 2})  # fmt: skip
    def _reinforce(x: LossInputs, m: MethodConfig):
        calls.append(m.overlong_buffer)
        loss = -(x.adv[:, None] * x.logp * x.mask).sum() / x.tokens
        return loss, {"adv_abs": float(x.adv.abs().mean())}

    trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, throwaway_method, **{"optim.total_batches": 1}))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert calls and set(calls) == {2}  # the method's own default reached its loss
    assert trainer.plan.off_policy == 1 and trainer.plan.on_policy == 5  # its group: demonstration + 5 rollouts
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert f"{throwaway_method}/adv_abs" in record and "adv/off_policy_mean" in record
    assert throwaway_method in dataclasses.asdict(trainer.cfg)["method"]["name"]
