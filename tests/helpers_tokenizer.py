"""A tiny byte-level BPE tokenizer with a ChatML chat template, built locally in milliseconds.

Tests must not load anything from a hub, so tests that need a Hugging Face tokenizer build
this one: byte-level (any Unicode string round-trips, nothing maps to an unknown token),
a few merges learned from a handful of math sentences, and special tokens for ChatML.

    from helpers_tokenizer import build_tokenizer
    tok = build_tokenizer()                      # with a chat template
    tok = build_tokenizer(chat_template=False)   # plain text only
"""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

RESERVED_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_TRAINING_TEXT = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? #### 72",
    "Let's think step by step and output the final answer within \\boxed{}.",
    "The answer is \\boxed{\\frac{1}{2}}. What is 12 + 34? 1 2 3 4 5 6 7 8 9 0",
]


@cache
def _trained_backend() -> str:
    """Train the byte-level BPE once per test session; returned as JSON so callers get copies."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=RESERVED_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT, trainer=trainer)
    return tok.to_str()


def build_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A fresh Hugging Face fast tokenizer; ChatML chat template unless ``chat_template=False``."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_backend()),
        eos_token="<|im_end|>",
        pad_token="<pad>",
        bos_token=None,
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
