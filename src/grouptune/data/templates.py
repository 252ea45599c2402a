"""Prompt templates of the papers' evaluations (``data.prompt_template``).

A template turns a question into the text the model sees. The two ``qwen*`` templates are the
Qwen2.5-Math harness's (QwenLM/Qwen2.5-Math ``evaluation/utils.py`` ``PROMPT_TEMPLATES``, commit
a45202bd16f1ec06f433442dc1152d0074773465), which the GFT paper's evaluation uses: ChatML text
written out, not the tokenizer's chat template (the harness does not apply one).

    qwen25-math-cot  system: the instruction; user: the question (Qwen2.5-Math-Instruct's prompt)
    qwen-boxed       system: "You are a helpful assistant."; user: the question, a newline, the
                     instruction (Qwen2-Math-Instruct's; the DFT code the GFT code builds on uses it)
    plain            the question, a newline, the instruction; no chat markup (for base models)
    chat             the same user message through the tokenizer's own chat template

The instruction is "Please reason step by step, and put your final answer within \\boxed{}."
An empty ``data.prompt_template`` keeps the default rendering (``data.chat_template``).
``data.prompt_suffix`` is appended to the question before the template applies.
"""

from __future__ import annotations

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

TEMPLATES = {
    "qwen25-math-cot": (
        f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n"
        "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "qwen-boxed": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{{question}}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "plain": f"{{question}}\n{INSTRUCTION}",
    "chat": None,  # the tokenizer's chat template around the `plain` text
}


def apply_template(name: str, question: str, tokenizer) -> str:
    """The prompt text of ``question`` under template ``name`` (a key of ``TEMPLATES``)."""
    if name not in TEMPLATES:
        raise KeyError(name)
    template = TEMPLATES[name]
    if template is not None:
        return template.replace("{question}", question)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("data.prompt_template 'chat' needs a tokenizer with a chat template")
    messages = [{"role": "user", "content": TEMPLATES["plain"].replace("{question}", question)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
