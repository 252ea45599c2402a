"""The cost of one huge prompt in the training data: what it takes to load a data set whose
row holds a 10 MB prompt, with ``data.max_prompt_length`` 1024 (the default) and
``data.long_prompts drop``.

    python benchmarks/bench_long_prompt.py                  # 10 MB, both cases, 3 repeats (~4 min on 2 cores)
    python benchmarks/bench_long_prompt.py --mb 1 --repeats 1

Cases, each in a fresh process (``--repeats`` times, the median reported):
    whole      the prompt tokenized whole before its length is checked (grouptune before the
               prompt-window check: ``grouptune.data.prompts.WINDOW_CHARS_PER_TOKEN`` raised
               so that every prompt counts as short);
    windowed   grouptune as it is: the prompt judged on a prefix window (``grouptune.data.prompts``).
Both load the same JSON Lines file (8 ordinary rows and the huge one, a chat prompt) through
``grouptune.data.load_examples`` with the same tokenizer: the byte-level BPE of
``bench_trainer.py`` (32,000 ids). Reported: wall time of ``load_examples`` and the growth of
the peak resident memory (``ru_maxrss``) during it. Results go to
``benchmarks/results/long_prompt.json`` and ``benchmarks/results/long_prompt.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("whole", "windowed")


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def write_data(path: Path, mb: float) -> int:
    sentence = "Natalia sold clips to 48 of her friends in April. How many clips did she sell? "
    huge = sentence * int(mb * 1e6 / len(sentence))
    rows = [{"prompt": f"What is {i} + {i + 1}?"} for i in range(8)]
    rows.insert(4, {"prompt": [{"role": "user", "content": huge}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(huge)


def child(case: str, data: str, out: str) -> None:
    sys.path.insert(0, str(HERE))
    from bench_trainer import byte_level_tokenizer

    from grouptune.config import DataConfig
    from grouptune.data import load_examples, prompts

    tok = byte_level_tokenizer(32_000)
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    if case == "whole":
        prompts.WINDOW_CHARS_PER_TOKEN = 10**12
    cfg = DataConfig(max_prompt_length=1024, long_prompts="drop")
    before = _max_rss()
    t0 = time.perf_counter()
    examples = load_examples(cfg, data, tok)
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "peak_growth_gb": (_max_rss() - before) / 1e9, "loaded": len(examples),
              "dropped": examples.report.n_dropped}  # fmt: skip
    Path(out).write_text(json.dumps(result))


def run_case(case: str, data: Path, tmp: Path) -> dict:
    out = tmp / f"{case}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, __file__, "--child", case, str(data), str(out)], check=True, env=env)
    return json.loads(out.read_text())


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"One {meta['prompt_chars'] / 1e6:.1f} MB chat prompt among 8 short ones, data.max_prompt_length 1024, "
             f"drop; byte-level BPE (32,000 ids); median of {meta['repeats']} fresh processes; "
             f"load average {meta['load']}.", "",
             "| case | load_examples (s) | peak memory growth (GB) | loaded | dropped |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for case, r in summary.items():
        lines.append(f"| {case} | {r['seconds']:.2f} | {r['peak_growth_gb']:.2f} | {r['loaded']} | {r['dropped']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=10.0, help="size of the huge prompt in MB")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default=str(HERE / "results" / "long_prompt.json"))
    p.add_argument("--child", nargs=3, metavar=("CASE", "DATA", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(*a.child)
    cases = a.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        chars = write_data(data, a.mb)
        raw = {c: [] for c in cases}
        for _ in range(a.repeats):  # interleaved, so load from other processes falls on both alike
            for case in cases:
                raw[case].append(run_case(case, data, Path(tmp)))
    summary = {c: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for c, runs in raw.items()}
    meta = {"prompt_chars": chars, "repeats": a.repeats, "load": round(os.getloadavg()[0], 2)}
    Path(a.out).write_text(json.dumps({"meta": meta, "summary": summary, "raw": raw}, indent=2))
    Path(a.out).with_suffix(".md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()
