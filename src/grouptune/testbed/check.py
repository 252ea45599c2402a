"""Quick accuracy check of a testbed model: greedy and mean accuracy of T=1 samples.

The project's general evaluation (``grouptune eval``) lives elsewhere; this is the
testbed's own report, used to tune and document the shipped base model::

    python -m grouptune.testbed.check --model DIR --split test --k 8

Scoring is strict GSM8K style: the completion's ``#### n`` must equal the gold answer.
"""

from __future__ import annotations

import argparse
import json
import re

import torch

_ANSWER = re.compile(r"####\s*(-?[\d,]+)")


def extract_answer(completion: str) -> str | None:
    """The number after the first ``####``, commas removed; None if there is none."""
    m = _ANSWER.search(completion)
    return m.group(1).replace(",", "") if m else None


def is_correct(completion: str, gold: str) -> bool:
    pred = extract_answer(completion)
    return pred is not None and pred.lstrip("0") == str(gold).lstrip("0")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
) -> list[str]:
    """Completions for ``prompts`` (greedy when ``temperature == 0``), batched with left padding."""
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        )
        kwargs = (
            {"do_sample": False}
            if temperature == 0
            else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        )
        seqs = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **kwargs,
        )
        out += tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def accuracy(
    model, tokenizer, rows: list[dict], *, k: int = 0, max_new_tokens: int = 64, seed: int = 0
) -> dict:
    """``greedy`` accuracy and, if ``k > 0``, ``mean@k``: mean accuracy of ``k`` samples at T=1.

    Also the fraction of greedy completions that end in the ``#### n`` format (``format``).
    """
    prompts = [r["prompt"] for r in rows]
    golds = [r["answer"] for r in rows]
    model.eval()
    greedy = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    result = {
        "n": len(rows),
        "greedy": sum(is_correct(c, g) for c, g in zip(greedy, golds)) / len(rows),
        "format": sum(extract_answer(c) is not None for c in greedy) / len(rows),
    }
    if k > 0:
        torch.manual_seed(seed)
        sampled = generate(
            model,
            tokenizer,
            [p for p in prompts for _ in range(k)],
            temperature=1.0,
            max_new_tokens=max_new_tokens,
        )
        hits = [is_correct(c, g) for c, g in zip(sampled, (g for g in golds for _ in range(k)))]
        per_prompt = [sum(hits[j * k : (j + 1) * k]) for j in range(len(rows))]
        result[f"mean@{k}"] = sum(hits) / len(hits)
        # prompts whose k samples are not all equally scored: the groups that carry signal
        result[f"spread@{k}"] = sum(0 < c < k for c in per_prompt) / len(rows)
    return result


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grouptune.testbed.arithmetic import read_jsonl
    from grouptune.testbed.paths import base_model_path, data_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="Model directory (default: the shipped base model).")
    p.add_argument(
        "--split", nargs="+", default=["test", "test_hard"], help="Shipped splits or .jsonl files."
    )
    p.add_argument("--k", type=int, default=8, help="Samples per prompt at T=1 for mean@k (0: greedy only).")
    p.add_argument("--limit", type=int, default=0, help="Use only the first N rows of each split (0: all).")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.model or str(base_model_path())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    for split in args.split:
        rows = read_jsonl(split if split.endswith(".jsonl") else data_path(split))
        rows = rows[: args.limit] if args.limit else rows
        print(json.dumps({"split": split, **accuracy(model, tokenizer, rows, k=args.k)}))


if __name__ == "__main__":
    main()
