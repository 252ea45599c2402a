"""The testbed's reward model: the script reproduces the shipped weights from its seed, and the
shipped model, scored through ``rm:PATH``, prefers correct worked solutions more often than chance."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from grouptune.config import RewardConfig
from grouptune.rewards import build_reward_functions
from grouptune.testbed import reward_model
from grouptune.testbed.paths import reward_model_path

TINY = dict(n_pairs=32, epochs=1, batch_size=8)  # from the base model: a few seconds


def _trained(cfg) -> dict[str, torch.Tensor]:
    model, _, _ = reward_model.train_reward_model(cfg, verbose=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_script_reproduces_the_shipped_weights_from_its_seed():
    """Re-trains with the shipped reward_config.json (about 30 s on one thread). Checked bit for bit
    under transformers 5.19 (the version that built it) and 5.24."""
    pytest.importorskip("trl")
    cfg = reward_model.load_config(reward_model_path())
    shipped = load_file(reward_model_path() / "model.safetensors")
    weights = _trained(cfg)
    assert weights.keys() == shipped.keys()
    assert all(torch.equal(weights[k], shipped[k]) for k in shipped)


def test_another_seed_gives_other_weights_and_settings_are_restored():
    pytest.importorskip("trl")
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a, b = (_trained(reward_model.RewardModelConfig(seed=s, **TINY)) for s in (0, 1))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert not torch.equal(a["score.weight"], b["score.weight"])
    init = reward_model.build_model(reward_model.RewardModelConfig(seed=0), reward_model.reward_tokenizer())
    assert not torch.equal(init.model.layers[0].mlp.up_proj.weight, a["model.layers.0.mlp.up_proj.weight"])


def _pair_accuracy(score, pairs) -> float:
    return reward_model.pair_accuracy(lambda p, c: score(p, c, answer=[None] * len(p)), pairs)


def test_shipped_model_through_rm_path_prefers_correct_solutions():
    """100 held-out pairs (test split: 50 careless-student, 50 noisy-teacher wrong answers). At
    chance (p = 0.5) P(X >= 63 of 100) = 0.006, so 63 right is a significant preference. Measured:
    0.66 (the card reports 0.675 on 200 pairs)."""
    (rf,) = build_reward_functions(RewardConfig(functions=[f"rm:{reward_model_path()}"]))
    pairs = reward_model.pairs_from_split("test", 100)
    assert {p["kind"] for p in pairs[:50]} == {"careless"} and {p["kind"] for p in pairs[50:]} == {"teacher"}
    assert _pair_accuracy(rf.fn, pairs) >= 0.63


def test_training_sees_the_tokens_rm_path_scores():
    """TRL appends EOS to text pairs; rollouts carry none. The pairs go to TRL tokenized as
    ``RewardModel`` tokenizes them (its right-padded batch, padding removed): no EOS."""
    (rf,) = build_reward_functions(RewardConfig(functions=[f"rm:{reward_model_path()}"]))
    tok = rf.fn.tokenizer
    assert tok.padding_side == "right" and tok.eos_token_id == 1
    pairs = reward_model.pairs_from_split("train", 8)
    ids = reward_model.tokenized_pairs(pairs, reward_model.reward_tokenizer())["chosen_ids"]
    batch = tok([p["prompt"] + p["chosen"] for p in pairs], padding=True)
    scored = [
        [t for t, m in zip(row, mask) if m] for row, mask in zip(batch["input_ids"], batch["attention_mask"])
    ]
    assert scored == ids
    assert all(
        tok.eos_token_id not in row and tok.decode(row) == p["prompt"] + p["chosen"]
        for row, p in zip(ids, pairs)
    )


def test_command_line_writes_a_loadable_model_with_its_card(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "rm"
    reward_model.main(["--out", str(out), "--init", "scratch", "--n-pairs", "16", "--epochs", "1",
                       "--n-eval-pairs", "20", "--quiet"])  # fmt: skip
    files = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "reward_config.json",
        "MODEL_CARD.md",
    } <= files
    assert not any(name.endswith((".bin", ".pt")) or name.startswith("checkpoint") for name in files)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.hidden_size == 64 and model.config.pad_token_id == 0
    assert tok.padding_side == "right" and len(tok) == model.config.vocab_size
    assert json.loads((out / "reward_config.json").read_text())["n_pairs"] == 16
    card = (out / "MODEL_CARD.md").read_text()
    assert (
        "| training pairs | 16 |" in card and "| held out (first rows of the test split): all | 20 |" in card
    )
