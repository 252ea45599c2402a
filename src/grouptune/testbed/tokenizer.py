"""Character-level tokenizer for the arithmetic testbed, in Hugging Face format.

One token per character (``tokenizers`` WordLevel over single characters) and a
decoder that concatenates, so ``decode(encode(s)) == s`` for every task string.
Special tokens: ``<pad>`` (0), ``</s>`` (1, end of sequence) and ``<unk>`` (2). Like
Qwen2 there is no BOS token and nothing is added on encode: the trainer appends EOS
to demonstrations, generation stops on it.

The chat template renders ``[{"role": "user", "content": "347+85"}]`` with a
generation prompt as ``"Q:347+85\\nA:"`` -- exactly the string prompts of the data
files, so string and message-list prompts give the same tokens.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
RESERVED_TOKENS = [PAD, EOS, UNK]
#: Every character the task and its chat template use.
CHARACTERS = list("0123456789") + list("+-*/=()#.,:?") + list("QAS") + [" ", "\n"]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'Q:' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'A:' + message['content'] + eos_token }}"
    "{%- else -%}{{ 'S:' + message['content'] + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'A:' }}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The testbed tokenizer (vocabulary: special tokens, then ``CHARACTERS``)."""
    vocab = {tok: i for i, tok in enumerate(RESERVED_TOKENS + CHARACTERS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # "[\s\S]" isolates every character, newline included.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(RESERVED_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
        padding_side="left",
    )
