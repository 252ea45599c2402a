"""grouptune.logprobs against the naive log_softmax + gather (float64 reference), no TRL."""

import pytest
import torch

from grouptune.logprobs import logprobs_and_entropy, selective_log_softmax

V = 37


def naive(logits, index, temperature=1.0):
    """The definition, in float64: log_softmax, gather, and -sum p log p."""
    logp_all = torch.log_softmax(logits.double() / temperature, dim=-1)
    logp = logp_all.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def make(dtype, shape=(3, 5), seed=0):
    torch.manual_seed(seed)
    logits = (torch.randn(*shape, V) * 4).to(dtype)
    return logits, torch.randint(0, V, shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_values_match_naive(dtype, temperature, chunk_size):
    """float32 arithmetic on the exact input values: agrees with float64 to float32 precision,
    for bf16 input too (each chunk is upcast before the softmax)."""
    logits, index = make(dtype)
    logp, entropy = logprobs_and_entropy(logits, index, temperature=temperature, chunk_size=chunk_size)
    ref_logp, ref_entropy = naive(logits, index, temperature)
    assert logp.dtype == entropy.dtype == torch.float32 and logp.shape == index.shape
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(entropy.double(), ref_entropy, rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(
        selective_log_softmax(logits, index, temperature=temperature), logp, rtol=0, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_gradients_match_naive(dtype, temperature):
    """Gradient of sum(w1 * logp + w2 * entropy) with respect to the logits, and of logp alone."""
    logits, index = make(dtype, seed=1)
    w1, w2 = torch.randn(index.shape), torch.randn(index.shape)
    for with_entropy in (True, False):
        x = logits.clone().requires_grad_(True)
        logp, entropy = logprobs_and_entropy(
            x, index, temperature=temperature, with_entropy=with_entropy, chunk_size=4
        )
        objective = (w1 * logp).sum() + ((w2 * entropy).sum() if with_entropy else 0.0)
        (grad,) = torch.autograd.grad(objective, x)
        x_ref = logits.double().requires_grad_(True)
        ref_logp, ref_entropy = naive(x_ref, index, temperature)
        ref_objective = (w1.double() * ref_logp).sum() + (
            (w2.double() * ref_entropy).sum() if with_entropy else 0.0
        )
        (ref_grad,) = torch.autograd.grad(ref_objective, x_ref)
        assert grad.dtype == dtype
        if dtype == torch.float32:
            torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)
        else:  # float32 and float64 gradients, each rounded to bf16: at most one bf16 ulp apart
            torch.testing.assert_close(grad, ref_grad.to(dtype), rtol=2**-8, atol=1e-6)


def test_only_entropy_gradient():
    logits, index = make(torch.float32, seed=2)
    x = logits.clone().requires_grad_(True)
    _, entropy = logprobs_and_entropy(x, index)
    (grad,) = torch.autograd.grad(entropy.sum(), x)
    x_ref = logits.double().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(naive(x_ref, index)[1].sum(), x_ref)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


def test_sliced_logits_are_not_copied_and_match():
    """``logits[:, :-1]`` (what a causal LM gives for its completion) cannot be viewed as rows."""
    full, _ = make(torch.float32, shape=(3, 6), seed=3)
    full.requires_grad_(True)
    sliced = full[:, :-1]
    index = torch.randint(0, V, (3, 5))
    logp, entropy = logprobs_and_entropy(sliced, index, chunk_size=2)
    ref_logp, ref_entropy = naive(sliced, index)
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-6, atol=2e-6)
    (grad,) = torch.autograd.grad(logp.sum() + entropy.sum(), full)
    x_ref = full.detach().double().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(sum(t.sum() for t in naive(x_ref[:, :-1], index)), x_ref)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)
    assert (grad[:, -1] == 0).all()


def test_two_dimensional_logits_and_int32_index():
    logits, index = make(torch.float32, shape=(7,), seed=4)
    logp = selective_log_softmax(logits, index.int())
    torch.testing.assert_close(logp.double(), naive(logits, index)[0], rtol=1e-6, atol=2e-6)


def test_input_is_not_modified():
    logits, index = make(torch.bfloat16, seed=5)
    before = logits.clone()
    x = logits.requires_grad_(True)
    logp, entropy = logprobs_and_entropy(x, index, temperature=0.7)
    (logp.sum() + entropy.sum()).backward()
    torch.testing.assert_close(logits.detach(), before, rtol=0, atol=0)


def test_autograd_saves_only_the_logits_and_per_row_scalars():
    """What backward keeps alive: the input logits themselves (no copy) and O(rows) float32.
    The naive path keeps a (rows, V) float32 log-softmax on top of that."""
    logits, index = make(torch.bfloat16, shape=(4, 16), seed=6)
    x = logits.requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logprobs_and_entropy(x, index)
    others = [t for t in saved if t.data_ptr() != x.data_ptr()]
    assert any(t.data_ptr() == x.data_ptr() for t in saved)
    assert sum(t.numel() for t in others) <= 3 * index.numel()
    naive_saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: naive_saved.append(t) or t, lambda t: t):
        torch.log_softmax(x.float(), -1).gather(-1, index[..., None])
    assert max(t.numel() for t in naive_saved) == x.numel()


def test_no_entropy_returns_none_and_errors():
    logits, index = make(torch.float32)
    assert logprobs_and_entropy(logits, index, with_entropy=False)[1] is None
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        selective_log_softmax(logits, index, temperature=0)
    with pytest.raises(ValueError, match=r"index shape \(3, 4\)"):
        selective_log_softmax(logits, index[:, :4])
