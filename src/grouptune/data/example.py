"""What ``load_examples`` returns: ``Example``s, the ``LoadReport`` of how they were read, and
``reward_columns``, the columns a reward function sees."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Example:
    prompt: str | list[dict]  # as in the source: text or chat messages [{"role", "content"}, ...]
    prompt_text: str  # what the model sees: chat template and suffix applied
    prompt_ids: list[int]  # tokens of prompt_text
    answer: str | None  # the verifier's gold answer
    completion: str | None  # expert demonstration
    teacher_completions: list[str] = field(default_factory=list)
    row: dict = field(default_factory=dict)  # every raw column, for user reward functions
    index: int = 0  # row number in the source (from 0)


@dataclass
class LoadReport:
    source: str
    n_rows: int = 0  # rows in the source
    n_loaded: int = 0  # examples returned
    n_dropped: int = 0  # prompts over max_prompt_length, dropped
    n_truncated: int = 0  # prompts over max_prompt_length, cut to their last tokens
    max_prompt_tokens: int = 0  # longest prompt returned

    def __str__(self) -> str:
        text = f"{self.source}: {self.n_rows} rows -> {self.n_loaded} examples"
        counts = ((self.n_dropped, "dropped"), (self.n_truncated, "truncated"))
        extra = [f"{n} long prompts {what}" for n, what in counts if n]
        text += f" ({', '.join(extra)})" if extra else ""
        return text + f", longest prompt {self.max_prompt_tokens} tokens"


class ExampleList(list):
    """The loaded ``Example``s (a plain list) with the ``LoadReport`` of how they were read."""

    def __init__(self, examples: Iterable[Example], report: LoadReport):
        super().__init__(examples)
        self.report = report


def reward_columns(examples: Sequence[Example], repeat: int = 1) -> dict[str, list]:
    """Columns for ``compute_rewards``: ``answer`` (the gold answer) and every raw column, each
    value repeated ``repeat`` times (group-contiguous). Raw columns named ``answer``,
    ``prompts`` or ``completions`` are left out: they would shadow the gold answer or the
    reward function's own arguments."""
    columns: dict[str, list] = {"answer": [ex.answer for ex in examples for _ in range(repeat)]}
    keys = dict.fromkeys(k for ex in examples for k in ex.row)
    for key in keys:
        if key not in ("answer", "prompts", "completions"):
            columns[key] = [ex.row.get(key) for ex in examples for _ in range(repeat)]
    return columns
