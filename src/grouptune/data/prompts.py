"""Prompts as the model sees them: suffix appended, chat template applied, tokenized, and the
``long_prompts`` policy applied to prompts over ``max_prompt_length`` tokens."""

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


def fit_prompts(
    drafts, cfg: DataConfig, tokenizer, table: Table, problems: list, report: LoadReport
) -> list[Example]:
    """Tokenize the prompts and apply ``long_prompts``; problems are appended to ``problems``."""
    examples = []
    all_ids = _token_ids([f["prompt_text"] for _, _, f in drafts], tokenizer)
    for (index, row, f), ids in zip(drafts, all_ids):
        if isinstance(ids, str):
            problems.append(Problem(table.name, index, None, ids, table.line(index)))
            continue
        text = f["prompt_text"]
        if len(ids) > cfg.max_prompt_length:
            if cfg.long_prompts == "error":
                message = (
                    f"prompt has {len(ids)} tokens, more than data.max_prompt_length={cfg.max_prompt_length}"
                )
                problems.append(Problem(table.name, index, None, message, table.line(index)))
                continue
            if cfg.long_prompts == "drop":
                report.n_dropped += 1
                continue
            ids = ids[-cfg.max_prompt_length :]
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


def _token_ids(texts: list[str], tokenizer) -> list[list[int] | str]:
    """Token ids of each text (one batched call); an error message for a text that fails."""
    if not texts:
        return []
    try:
        return list(tokenizer(texts, add_special_tokens=False)["input_ids"])
    except Exception:  # find the culprits one by one
        out: list[list[int] | str] = []
        for text in texts:
            try:
                out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
            except Exception as exc:
                out.append(f"tokenizer failed: {type(exc).__name__}: {exc}")
        return out
