"""Prompts as the model sees them: suffix appended, chat template applied, tokenized, and the
``long_prompts`` policy applied to prompts over ``max_prompt_length`` tokens.

A long prompt costs what its limit costs, not what its length costs. With ``L`` =
``max_prompt_length``, a prompt of at most ``WINDOW_CHARS_PER_TOKEN * L`` characters (32 per
token: far more than any tokenizer averages on text) is tokenized whole, in one batched call
with the others: its count is exact. A longer one is measured on growing prefixes (32 L
characters, then 4 times more each round): as soon as a prefix has more than ``2 L + 16``
tokens the prompt is over the limit, whatever the rest holds. The factor 2 is the margin
against the one way a prefix can count differently from the whole text: the piece cut at its
end, which may split into more tokens than it does in the whole text (a few tokens, never
``L``). A prefix that reaches the whole text gives the exact count. So a 10 MB prompt is
judged on some 32 L characters. ``truncate`` keeps the last ``L`` tokens of a suffix window
measured the same way (the cut is more than ``L + 16`` tokens before the kept ones).
"""

from __future__ import annotations

from grouptune.config import DataConfig
from grouptune.data.example import Example, LoadReport
from grouptune.data.problems import BadValue, Problem
from grouptune.data.readers import Table
from grouptune.data.templates import apply_template


def render_prompt(prompt: str | list[dict], cfg: DataConfig, tokenizer) -> str:
    """The text the model sees: suffix appended, chat template applied (see the package docstring);
    with ``data.prompt_template``, that template instead (``grouptune.data.templates``)."""
    if cfg.prompt_template:
        return _templated(prompt, cfg, tokenizer)
    use_template = cfg.chat_template and bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, str):
        if not use_template:
            return _join(prompt, cfg.prompt_suffix)
        messages = [{"role": "user", "content": _join(prompt, cfg.prompt_suffix)}]
    elif not use_template:
        why = "data.chat_template is false" if not cfg.chat_template else "the tokenizer has no chat template"
        raise BadValue(f"prompt is a list of chat messages, but {why}")
    else:
        messages = _with_suffix(prompt, cfg.prompt_suffix)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise BadValue(f"chat template failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(text, str):
        raise BadValue(f"chat template returned {type(text).__name__}, expected text")
    return text


def _templated(prompt: str | list[dict], cfg: DataConfig, tokenizer) -> str:
    """``data.prompt_template`` around a text prompt, or around the text of a lone user message."""
    if not isinstance(prompt, str):
        if len(prompt) != 1 or prompt[0]["role"] != "user":
            raise BadValue("data.prompt_template needs a text prompt or a single user message")
        prompt = prompt[0]["content"]
    try:
        return apply_template(cfg.prompt_template, _join(prompt, cfg.prompt_suffix), tokenizer)
    except Exception as exc:
        raise BadValue(f"prompt template {cfg.prompt_template!r} failed: {exc}") from None


def _join(text: str, suffix: str) -> str:
    """``text`` and ``suffix`` joined by a space, unless one side already has whitespace there."""
    if not suffix:
        return text
    sep = "" if not text or text[-1].isspace() or suffix[0].isspace() else " "
    return text + sep + suffix


def _with_suffix(messages: list[dict], suffix: str) -> list[dict]:
    """The messages with ``suffix`` appended to the last user message (the question being asked)."""
    if not suffix:
        return messages
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise BadValue("no user message to append data.prompt_suffix to")
    return [
        {**m, "content": _join(m["content"], suffix)} if i == users[-1] else m for i, m in enumerate(messages)
    ]


WINDOW_CHARS_PER_TOKEN = 32  # prompts up to this many characters per allowed token are tokenized whole
_GROWTH = 4


def fit_prompts(
    drafts, cfg: DataConfig, tokenizer, table: Table, problems: list, report: LoadReport
) -> list[Example]:
    """Tokenize the prompts and apply ``long_prompts``; problems are appended to ``problems``."""
    examples = []
    limit = cfg.max_prompt_length
    all_ids = _token_ids([f["prompt_text"] for _, _, f in drafts], tokenizer, limit)
    for (index, row, f), ids in zip(drafts, all_ids):
        if isinstance(ids, str):
            problems.append(Problem(table.name, index, None, ids, table.line(index)))
            continue
        text = f["prompt_text"]
        if isinstance(ids, _Over) or len(ids) > limit:
            if cfg.long_prompts == "error":
                count = f"over {ids.tokens}" if isinstance(ids, _Over) else str(len(ids))
                message = f"prompt has {count} tokens, more than data.max_prompt_length={limit}"
                problems.append(Problem(table.name, index, None, message, table.line(index)))
                continue
            if cfg.long_prompts == "drop":
                report.n_dropped += 1
                continue
            ids = _last_tokens(text, tokenizer, limit) if isinstance(ids, _Over) else ids[-limit:]
            text = tokenizer.decode(ids, skip_special_tokens=False)
            report.n_truncated += 1
        example = Example(
            prompt=f["prompt"],
            prompt_text=text,
            prompt_ids=ids,
            answer=f["answer"],
            completion=f["completion"],
            teacher_completions=f["teacher_completions"],
            row=dict(row),
            index=index,
        )
        examples.append(example)
    return examples


class _Over:
    """A prompt known to be over the limit from a prefix of it: ``tokens`` in that prefix."""

    def __init__(self, tokens: int):
        self.tokens = tokens


def _token_ids(texts: list[str], tokenizer, limit: int) -> list[list[int] | str | _Over]:
    """Token ids of each text (the short ones in one batched call), ``_Over`` for a long text
    shown to be over ``limit`` by a prefix, an error message for a text that fails."""
    window = WINDOW_CHARS_PER_TOKEN * limit
    short = [i for i, t in enumerate(texts) if len(t) <= window]
    out: list = [None] * len(texts)
    for i, ids in zip(short, _batch_ids([texts[i] for i in short], tokenizer)):
        out[i] = ids
    for i in (i for i, t in enumerate(texts) if len(t) > window):
        out[i] = _measure(texts[i], tokenizer, limit)
    return out


def _measure(text: str, tokenizer, limit: int) -> list[int] | str | _Over:
    """The ids of a long ``text``, or ``_Over`` as soon as a prefix proves it over ``limit``."""
    enough = 2 * limit + 16
    n = WINDOW_CHARS_PER_TOKEN * limit
    try:
        while n < len(text):
            ids = _ids(text[:n], tokenizer)
            if len(ids) > enough:
                return _Over(len(ids))
            n *= _GROWTH
        return _ids(text, tokenizer)
    except Exception as exc:
        return f"tokenizer failed: {type(exc).__name__}: {exc}"


def _last_tokens(text: str, tokenizer, limit: int) -> list[int]:
    """The last ``limit`` tokens of a long ``text``, from a suffix window that holds more than
    ``2 limit + 16`` tokens (or the whole text)."""
    n = WINDOW_CHARS_PER_TOKEN * limit
    while n < len(text):
        ids = _ids(text[-n:], tokenizer)
        if len(ids) > 2 * limit + 16:
            return ids[-limit:]
        n *= _GROWTH
    return _ids(text, tokenizer)[-limit:]


def _ids(text: str, tokenizer) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _batch_ids(texts: list[str], tokenizer) -> list[list[int] | str]:
    """Token ids of each text (one batched call); an error message for a text that fails."""
    if not texts:
        return []
    try:
        return list(tokenizer(texts, add_special_tokens=False)["input_ids"])
    except Exception:  # find the culprits one by one
        out: list[list[int] | str] = []
        for text in texts:
            try:
                out.append(_ids(text, tokenizer))
            except Exception as exc:
                out.append(f"tokenizer failed: {type(exc).__name__}: {exc}")
        return out
