"""Per-method sweeps of ``grouptune compare``: each method at its best setting, chosen on validation.

One learning rate for every method favours some methods by accident (their losses have different
scales), so a suite may name ``sweep: {optim.lr: [3.0e-5, 1.0e-4, 3.0e-4]}`` (or the command line
``--sweep optim.lr=3e-5,1e-4,3e-4``; a run may name its own ``sweep``). Then:

1. the last ``validation`` rows of the training file (default 200) become a validation split,
   written to ``<report>/data/``; no run of the suite trains on them, and the test splits are
   never used to choose;
2. each run trains at every value (every combination, for several keys) on the first
   ``sweep_seeds`` seeds (default 1) and is scored by ``select`` (default ``validation/greedy``:
   the final greedy accuracy on the validation split; higher is better), averaged over those seeds;
3. the best value runs the remaining seeds; the report gives test results at each method's chosen
   value and the whole sweep (``results.json``: every trial's settings, seed, score and metrics).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

DEFAULT_VALIDATION = 200
DEFAULT_SELECT = "validation/greedy"


def parse_sweep(items: list[str]) -> dict[str, list]:
    """``["optim.lr=1e-5,3e-5"]`` -> ``{"optim.lr": [1e-05, 3e-05]}`` (values parsed as on the CLI)."""
    from grouptune.config import ConfigError, parse_cli_value

    sweep = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--sweep {item!r}: expected KEY=V1,V2,... (e.g. optim.lr=3e-5,1e-4)")
        sweep[key] = [parse_cli_value(v) for v in values.split(",")]
    return sweep


def grid(sweep: dict[str, list]) -> list[dict]:
    """Every combination of the swept values, in the order given (``[{}]`` without a sweep)."""
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def slug(values: dict) -> str:
    """A directory name for one setting of the sweep: ``optim.lr=0.0001``."""
    return ",".join(f"{k}={v}" for k, v in values.items()) or "default"


def split_validation(train_file: str, n: int, out: Path) -> dict:
    """Write the training file's first rows and its last ``n`` rows as two JSONL files under
    ``out``; return the overrides that train on the first and evaluate on the second."""
    from grouptune.config import ConfigError

    path = Path(train_file)
    if path.suffix != ".jsonl":
        raise ConfigError(f"a sweep's validation split is carved from a JSONL training file, got data.train={path}")
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    if not 0 < n < len(rows):
        raise ConfigError(f"validation: {n} rows cannot be held out of {path} ({len(rows)} rows)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("\n".join(rows[:-n]) + "\n")
    (out / "validation.jsonl").write_text("\n".join(rows[-n:]) + "\n")
    return {"data.train": str(out / "train.jsonl"), "validation_file": str(out / "validation.jsonl")}


def score(final: dict, select: str) -> float:
    """The selection metric of one trial (``eval/<select>``); a missing or NaN value scores -inf."""
    value = final.get(f"eval/{select}", float("nan"))
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


def choose(trials: list[dict]) -> dict:
    """The setting with the best mean score over its seeds; ties go to the one listed first."""
    by_setting: dict[str, list] = {}
    for t in trials:
        by_setting.setdefault(json.dumps(t["values"]), []).append(t["score"])
    means = {k: sum(v) / len(v) for k, v in by_setting.items()}
    best = max(means, key=lambda k: means[k])  # max keeps the first of equal means
    return json.loads(best)


def sweep_table(sweeps: dict, select: str) -> str:
    """Rows: runs; columns: the swept settings; cells: the mean selection score, the chosen one bold."""
    settings = list(dict.fromkeys(slug(t["values"]) for s in sweeps.values() for t in s["trials"]))
    lines = [f"| method | {' | '.join(settings)} |", "|" + "---|" * (1 + len(settings))]
    for label, s in sweeps.items():
        cells = []
        for name in settings:
            scores = [t["score"] for t in s["trials"] if slug(t["values"]) == name]
            mean = sum(scores) / len(scores) if scores else float("nan")
            cell = "-" if not scores else f"{mean:.3f}"
            cells.append(f"**{cell}**" if name == slug(s["chosen"]) else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return f"Mean `{select}` over the sweep seeds; bold: the chosen setting.\n\n" + "\n".join(lines)
