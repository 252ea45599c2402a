"""pretrain.py is reproducible: same seed, same weights (a tiny config, seconds)."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grouptune.testbed import pretrain

TINY = dict(steps=20, batch_size=8, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, warmup=5)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    model, _ = pretrain.pretrain(pretrain.PretrainConfig(seed=seed, **TINY), verbose=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_identical_weights_other_seed_does_not():
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a, b, c = _weights(0), _weights(0), _weights(1)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before  # restored
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    init, _ = pretrain.pretrain(pretrain.PretrainConfig(seed=0, **{**TINY, "steps": 0}), verbose=False)
    assert not torch.equal(init.state_dict()["lm_head.weight"], a["lm_head.weight"])  # it did train


def test_command_line_writes_a_loadable_model_and_the_splits(tmp_path):
    args = ["--out", str(tmp_path / "m"), "--data-out", str(tmp_path / "d"), "--log-every", "1000"]
    for k, v in TINY.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    pretrain.main(args)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert model.config.hidden_size == 32 and tok.eos_token_id == model.config.eos_token_id == 1
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "test.jsonl",
        "test_hard.jsonl",
        "train.jsonl",
    ]
