"""Held-out evaluation: greedy accuracy, avg@k and the unbiased pass@k of arXiv 2107.03374.

A completion is *correct* when the first reward function (the verifier) gives it at
least 0.5 — the built-in verifiers of :mod:`grouptune.rewards` are binary. Used during
training and by ``grouptune eval``, which can also write the greedy completions for an
external judge (``AlpacaEvalExport``: AlpacaEval's model-outputs format).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from grouptune.config import ConfigError
from grouptune.data import DataError, Example, Problem
from grouptune.data.loader import VERIFIERS
from grouptune.metrics import nanmean, summarize_eval
from grouptune.rewards import compute_rewards, score_name
from grouptune.rundir import OutputDirError, notice


def _judge(reward_fns, examples: list[Example], completions: list[str], reps: int, *, score: bool = False):
    """Which completions the first function (the verifier) marks correct; with ``score``, also the
    scores of every later function (``score/<name>``: e.g. a reward model's proxy score)."""
    prompts = [ex.prompt_text for ex in examples for _ in range(reps)]
    columns: dict[str, list] = {"answer": [ex.answer for ex in examples for _ in range(reps)]}
    for key in examples[0].row:
        if key != "answer":
            columns[key] = [ex.row.get(key) for ex in examples for _ in range(reps)]
    rows = [ex.index for ex in examples for _ in range(reps)]
    fns = reward_fns if score else reward_fns[:1]
    result = compute_rewards(fns, prompts, completions, columns, row_ids=rows)
    values = list(result.per_function.values())
    correct = [bool(v >= 0.5) for v in values[0].tolist()]  # NaN (unjudged) counts as wrong
    return correct, {f"score/{score_name(rf.name)}": v.tolist() for rf, v in zip(fns[1:], values[1:])}


def greedy_completions(engine, tokenizer, examples: list[Example], max_new_tokens: int) -> list[str]:
    """The greedy completion of every example, as text (special tokens left out)."""
    ids = engine.generate([ex.prompt_ids for ex in examples], greedy=True, max_new_tokens=max_new_tokens).token_ids
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


@torch.no_grad()
def evaluate_examples(
    engine,
    tokenizer,
    examples: list[Example],
    reward_fns,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
    max_examples: int = 0,
    accelerator=None,
    greedy: bool = True,
    pass_at: tuple[int, ...] | list = (),
    greedy_texts: list[str] | None = None,
) -> dict:
    """Greedy accuracy, and with ``k > 0`` samples per prompt avg@k and pass@k.

    ``engine``: a rollout engine (``grouptune.engines``) holding the model's current weights.
    With an ``accelerator`` the examples are sharded over processes and the results gathered.
    ``greedy=False`` skips greedy decoding (the result has no ``greedy`` key; needs ``k > 0``).
    ``pass_at``: more k (each at most ``k``) whose pass@k is reported from the same samples.
    ``greedy_texts``: the greedy completions of the (first ``max_examples``) examples, already
    generated (``greedy_completions``): judged, not generated again; one process only.
    """
    if not greedy and k <= 0:
        raise ValueError("evaluate_examples: greedy=False needs k > 0 samples per prompt")
    sharded = accelerator is not None and accelerator.num_processes > 1
    if greedy_texts is not None and sharded:
        raise ValueError("evaluate_examples: greedy_texts are one process's; shard the generation instead")
    if max_examples:
        examples = examples[:max_examples]
    real = len(examples)
    if sharded:
        examples, real = shard(examples, accelerator.process_index, accelerator.num_processes)
    greedy_flags, scores = None, {}
    if greedy:
        texts = greedy_texts if greedy_texts is not None else greedy_completions(engine, tokenizer, examples, max_new_tokens)
        greedy_flags, scores = _judge(reward_fns, examples, texts, 1, score=True)
        greedy_flags, scores = greedy_flags[:real], {n: v[:real] for n, v in scores.items()}  # drop a shard's padding
    samples = _sampled_flags(engine, tokenizer, examples, reward_fns, k, temperature, max_new_tokens, seed)[:real]
    if sharded:
        from accelerate.utils import gather_object

        greedy_flags = gather_object(greedy_flags) if greedy else None
        samples = gather_object(samples)
        scores = {name: gather_object(v) for name, v in scores.items()}
    means = {name: nanmean(torch.tensor(v)) for name, v in scores.items()}  # NaN: a row the function could not judge
    if k == 0:
        return {"n_problems": len(greedy_flags), "greedy": sum(greedy_flags) / max(len(greedy_flags), 1), **means}
    return {**summarize_eval(samples, greedy_flags, k, pass_at), **means}


def _sampled_flags(engine, tokenizer, examples, reward_fns, k, temperature, max_new_tokens, seed) -> list[list[bool]]:
    """The correctness of ``k`` samples of each example (empty lists for ``k == 0``)."""
    if k <= 0:
        return [[] for _ in examples]
    torch.manual_seed(seed)  # requests without seeds continue torch's stream (or draw theirs from it)
    many = [ex.prompt_ids for ex in examples for _ in range(k)]
    ids = engine.generate(many, temperature=temperature, max_new_tokens=max_new_tokens).token_ids
    flat, _ = _judge(reward_fns, examples, tokenizer.batch_decode(ids, skip_special_tokens=True), k)
    return [flat[i * k : (i + 1) * k] for i in range(len(examples))]


def check_pass_at(log) -> None:
    """Refuse ``log.eval_pass_at`` values that the samples cannot give, before any training."""
    from grouptune.config import ConfigError

    bad = [j for j in log.eval_pass_at if not (isinstance(j, int) and not isinstance(j, bool) and 1 <= j <= log.eval_samples)]
    if bad:
        raise ConfigError(f"log.eval_pass_at: each k must be an integer in 1..log.eval_samples ({log.eval_samples}), got {bad}")


def shard(examples: list, rank: int, world: int) -> tuple[list, int]:
    """Process ``rank``'s examples (every ``world``-th) and how many are real: shards are padded
    to one length with a repeated example, so every process runs the same generation calls."""
    mine = examples[rank::world]
    size = -(-len(examples) // world)  # ceil
    filler = mine[-1:] or examples[:1]
    return mine + filler * (size - len(mine)), len(mine)


def load_engine(cfg):
    """The policy of ``cfg.model`` in the rollout engine ``rollout.engine`` names, and its tokenizer."""
    from grouptune.engines import make_engine
    from grouptune.modeling import eos_ids, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(cfg.model)
    return make_engine(cfg, None, model, tokenizer, eos_ids(tokenizer, model)), tokenizer


def set_name(source: str) -> str:
    """A data set's name in results and exports: a file's stem, else the hub name."""
    return Path(source).stem if Path(source).suffix else source


def evaluate_model(cfg, export: AlpacaEvalExport | None = None) -> dict:
    """``grouptune eval``: every ``data.eval`` set of a ``TrainConfig``, results keyed by data set.

    With ``export``, each set's greedy completions are also written for an external judge
    (``AlpacaEvalExport``; the result gains ``exported``, the file's path), and a set is scored
    only if it can be: ``reward.functions`` names a function, and when that first function is a
    verifier, some row has a gold answer; a set that is not has only ``n_problems`` (and a
    notice says why). Without ``export`` such a set is an error, before any generation.
    """
    from grouptune.rewards import build_eval_functions

    if not cfg.data.eval:
        raise ConfigError("data.eval: name at least one held-out data set to evaluate on")
    if not cfg.reward.functions and export is None:
        raise ConfigError("reward.functions is empty: nothing judges the completions; name a reward function, "
                          "or write the completions for an external judge with --export-alpaca-eval DIR")  # fmt: skip
    check_pass_at(cfg.log)
    if export is not None:
        export.check([set_name(src) for src in cfg.data.eval])  # before the model loads
    engine, tokenizer = load_engine(cfg)
    reward_fns = build_eval_functions(cfg.reward)
    sets = _load_sets(cfg, tokenizer)
    scored = {name: _scorable(cfg, src, examples, export) for name, (src, examples) in sets.items()}
    results = {}
    for name, (_, examples) in sets.items():
        texts = greedy_completions(engine, tokenizer, examples, cfg.rollout.max_new_tokens) if export else None
        results[name] = {"n_problems": len(examples)}
        if scored[name]:
            results[name] = evaluate_examples(
                engine, tokenizer, examples, reward_fns, k=cfg.log.eval_samples,
                temperature=cfg.log.eval_temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                seed=cfg.optim.seed, pass_at=cfg.log.eval_pass_at, greedy_texts=texts,
            )  # fmt: skip
        if export is not None:
            results[name]["exported"] = str(export.write(name, examples, texts))
    engine.close()
    return results


def _load_sets(cfg, tokenizer) -> dict[str, tuple[str, list[Example]]]:
    """Every ``data.eval`` set, its first ``data.max_eval_examples`` examples; one DataError for all."""
    from grouptune.data import load_examples

    sets, problems = {}, []
    for src in cfg.data.eval:
        try:
            examples = load_examples(cfg.data, src, tokenizer, split=cfg.data.eval_split)
        except DataError as e:
            problems += e.problems
            continue
        sets[set_name(src)] = (src, examples[: cfg.data.max_eval_examples or None])
    if problems:
        raise DataError(problems)
    return sets


def _scorable(cfg, source: str, examples: list[Example], export) -> bool:
    """Can the set's completions be judged (see ``evaluate_model``)? An error if not and nothing is exported."""
    setting = "reward.eval_functions" if cfg.reward.eval_functions else "reward.functions"
    fns = cfg.reward.eval_functions or cfg.reward.functions
    first = fns[0] if fns else None
    if first is None:
        return False  # export-only: evaluate_model refused this without an export
    if first not in VERIFIERS or any(ex.answer is not None for ex in examples):
        return True
    why = f"no gold answers for the verifier {first!r} ({setting}[0]) to judge"
    if export is None:
        message = (f"{why}; score the completions with a reward model (rm:PATH) or a user function, or write them "
                   "for an external judge with --export-alpaca-eval DIR")  # fmt: skip
        raise DataError([Problem(source, None, None, message)])
    notice(f"{source}: {why}: no accuracy, the completions are exported only")
    return False


# ----------------------------------------------------------------------------- export for external judges


def instruction(prompt: str | list[dict]) -> str:
    """The user's request as an external judge reads it: a text prompt as it is (no
    ``data.prompt_suffix``, no chat template); of chat messages, the one user message (system
    messages left out), or for a multi-turn conversation every turn as ``Role: text``, separated
    by blank lines."""
    if isinstance(prompt, str):
        return prompt
    turns = [m for m in prompt if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)


def default_generator(model: str) -> str:
    """The ``generator`` of an export: the model path's last part; a run's ``final/`` model is
    named after the run directory (``runs/gft/final`` -> ``gft``)."""
    path = Path(model.rstrip("/"))
    return path.parent.name if path.name == "final" and path.parent.name else path.name


@dataclass(frozen=True)
class AlpacaEvalExport:
    """``grouptune eval --export-alpaca-eval DIR``: each data set's greedy completions as
    ``DIR/<data set>.json``, AlpacaEval's model-outputs format: a JSON list of
    ``{"instruction", "output", "generator", "dataset"}``, one per example, in data order.

    A file is written whole or not at all (a temporary file, then a rename). An existing file
    is refused before anything loads, and never replaced unless ``overwrite``
    (``--log.overwrite true``)."""

    directory: Path
    generator: str
    overwrite: bool = False

    def path(self, name: str) -> Path:
        return self.directory / (re.sub(r"[^\w.-]+", "_", name).strip("._") + ".json")

    def check(self, names: list[str]) -> None:
        """Before any work: one file per data set, none there already, a directory that takes files."""
        where = f"--export-alpaca-eval {self.directory}"
        paths = [self.path(n) for n in names]
        clash = sorted({n for n, p in zip(names, paths) if paths.count(p) > 1})
        if clash:
            raise ConfigError(f"{where}: data.eval sets {clash} would write the same file; rename one of them")
        if not self.generator.strip():
            raise ConfigError(f"{where}: the generator name is empty; give one with --generator NAME")
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"{where}: not a directory")
        taken = [str(p) for p in paths if p.exists()]
        if taken and not self.overwrite:
            raise OutputDirError(f"{where}: {', '.join(taken)} already exists (an earlier export): replace it with "
                                 "--log.overwrite true, or export to another directory")  # fmt: skip
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".grouptune-write-test-"):
                pass
        except OSError as e:
            raise ConfigError(f"{where}: cannot write there: {e.strerror or e}") from None

    def write(self, name: str, examples: list[Example], texts: list[str]) -> Path:
        """``DIR/<name>.json``, written atomically; never over a file that appeared since ``check``."""
        rows = [
            {"instruction": instruction(ex.prompt), "output": text, "generator": self.generator, "dataset": name}
            for ex, text in zip(examples, texts, strict=True)
        ]
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        try:
            _publish(tmp, path, self.overwrite)
        except FileExistsError:
            raise OutputDirError(f"--export-alpaca-eval: {path} appeared while this evaluation ran; not replaced "
                                 "(--log.overwrite true replaces it)") from None  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)
        return path


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; without ``overwrite`` FileExistsError if ``path`` exists (a hard
    link refuses atomically; where the file system has none, a check just before the rename)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
