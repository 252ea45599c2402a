"""``grouptune eval --export-alpaca-eval``: greedy completions in AlpacaEval's model-outputs
format, also for prompt-only (RLHF) data without a verifier; files written whole, never over
an earlier export unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import arithmetic_rows, write_jsonl

from grouptune import cli
from grouptune.config import load_config
from grouptune.data import load_examples
from grouptune.evaluation import (
    AlpacaEvalExport,
    default_generator,
    greedy_completions,
    instruction,
    load_engine,
)
from grouptune.rundir import OutputDirError

HH_ROWS = [
    {"chosen": "\n\nHuman: Name a colour.\n\nAssistant: Blue.", "rejected": "\n\nHuman: Name a colour.\n\nAssistant: No."},
    {"chosen": "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke.\n\nAssistant: Why...",
     "rejected": "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke.\n\nAssistant: No."},
    {"chosen": "\n\nHuman: What is 2 + 2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2 + 2?\n\nAssistant: 5"},
    {"chosen": "\n\nHuman: Say yes.\n\nAssistant: Yes.", "rejected": "\n\nHuman: Say yes.\n\nAssistant: No."},
]  # fmt: skip
TINY = ["--rollout.max_new_tokens", "6", "--log.eval_samples", "0"]


def run_eval(*argv: str) -> int:
    return cli.main(["eval", *argv])


def test_export_of_prompt_only_data_without_a_verifier(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    out, results = tmp_path / "exports", tmp_path / "results.json"
    code = run_eval("--model.name_or_path", str(tiny_llama), "--data.eval", str(data), "--data.preset", "hh_rlhf",
                    "--data.max_eval_examples", "3", "--export-alpaca-eval", str(out), "--output", str(results),
                    *TINY)  # fmt: skip  (reward.functions is the default, the math verifier)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "no gold answers for the verifier 'math'" in err and "exported only" in err
    rows = json.loads((out / "hh.json").read_text())
    assert len(rows) == 3  # data.max_eval_examples
    assert all(list(r) == ["instruction", "output", "generator", "dataset"] for r in rows)
    assert [r["instruction"] for r in rows] == [
        "Name a colour.", "User: Hi!\n\nAssistant: Hello, how can I help?\n\nUser: Tell me a joke.", "What is 2 + 2?",
    ]  # fmt: skip
    assert {(r["generator"], r["dataset"]) for r in rows} == {(tiny_llama.name, "hh")}
    # the outputs are the greedy completions of the rendered prompts, in data order
    cfg = load_config(overrides={"model.name_or_path": str(tiny_llama), "data.preset": "hh_rlhf"})
    engine, tok = load_engine(cfg)
    examples = load_examples(cfg.data, data, tok)[:3]
    assert [r["output"] for r in rows] == greedy_completions(engine, tok, examples, 6)
    engine.close()
    assert json.loads(results.read_text()) == {"hh": {"n_problems": 3, "exported": str(out / "hh.json")}}
    assert not [p.name for p in out.iterdir() if p.name != "hh.json"], "no temporary file is left behind"


def test_export_with_gold_answers_is_scored_from_the_same_completions(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "arith.jsonl", arithmetic_rows(3, chat=False))
    out, results = tmp_path / "exports", tmp_path / "results.json"
    code = run_eval("--model.name_or_path", str(tiny_llama), "--data.eval", str(data), "--reward.functions",
                    "exact_match", "--data.prompt_suffix", "Answer with a number.", "--export-alpaca-eval", str(out),
                    "--generator", "my-model", "--output", str(results), *TINY)  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "arith.json").read_text())
    assert [r["instruction"] for r in rows] == ["What is 3 + 4?", "What is 4 + 6?", "What is 5 + 8?"]  # no suffix
    assert {r["generator"] for r in rows} == {"my-model"}
    table = json.loads(results.read_text())["arith"]
    assert table["n_problems"] == 3 and table["exported"] == str(out / "arith.json")
    gold = [str(r["answer"]) for r in arithmetic_rows(3)]
    assert table["greedy"] == sum(r["output"].strip() == g for r, g in zip(rows, gold)) / 3


def test_an_earlier_export_is_refused_before_the_model_loads_and_replaced_on_request(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS[:1])
    out = tmp_path / "exports"
    out.mkdir()
    (out / "hh.json").write_text("[] earlier")
    argv = ["--data.eval", str(data), "--data.preset", "hh_rlhf", "--export-alpaca-eval", str(out), *TINY]
    code = run_eval("--model.name_or_path", str(tmp_path / "no-such-model"), *argv)
    err = capsys.readouterr().err
    assert code == 2 and "hh.json already exists (an earlier export)" in err and "--log.overwrite true" in err
    assert (out / "hh.json").read_text() == "[] earlier"
    assert run_eval("--model.name_or_path", str(tiny_llama), *argv, "--log.overwrite", "true") == 0
    assert len(json.loads((out / "hh.json").read_text())) == 1


def test_unscorable_data_without_an_export_is_refused_before_generating(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    base = ["--model.name_or_path", str(tiny_llama), "--data.eval", str(data), "--data.preset", "hh_rlhf", *TINY]
    assert run_eval(*base) == 2
    err = capsys.readouterr().err
    assert f"{data}: no gold answers for the verifier 'math'" in err and "--export-alpaca-eval DIR" in err
    assert run_eval(*base, "--reward.functions", "[]") == 2
    assert "reward.functions is empty" in capsys.readouterr().err
    assert run_eval(*base, "--generator", "x") == 2
    assert "--generator names the model in an export" in capsys.readouterr().err
    assert run_eval(*base, "--suite", "gft_math", "--export-alpaca-eval", str(tmp_path / "x")) == 2
    assert "does not apply to --suite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_two_sets_writing_one_file_are_refused(tmp_path):
    export = AlpacaEvalExport(tmp_path / "out", "m")
    with pytest.raises(Exception, match=r"data.eval sets \['test'\] would write the same file"):
        export.check(["test", "test"])
    assert export.path("HuggingFaceH4/ultrafeedback_binarized") == tmp_path / "out" / "HuggingFaceH4_ultrafeedback_binarized.json"


def test_write_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    from grouptune.data import Example

    export = AlpacaEvalExport(tmp_path, "m")
    export.check(["set"])
    (tmp_path / "set.json").write_text("another run's")
    ex = Example(prompt="Hi?", prompt_text="Hi?", prompt_ids=[1], answer=None, completion=None)
    with pytest.raises(OutputDirError, match="appeared while this evaluation ran"):
        export.write("set", [ex], ["Hello."])
    assert (tmp_path / "set.json").read_text() == "another run's"
    assert [p.name for p in tmp_path.iterdir()] == ["set.json"]
    replaced = AlpacaEvalExport(tmp_path, "m", overwrite=True).write("set", [ex], ["Hello."])
    assert json.loads(replaced.read_text()) == [{"instruction": "Hi?", "output": "Hello.", "generator": "m",
                                                 "dataset": "set"}]  # fmt: skip


def test_instruction_and_generator_names():
    assert instruction("What is 2 + 2?") == "What is 2 + 2?"
    system = {"role": "system", "content": "Be brief."}
    assert instruction([system, {"role": "user", "content": "Hi"}]) == "Hi"
    assert default_generator("runs/gft/final/") == "gft"
    assert default_generator("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen2.5-0.5B-Instruct"
    assert default_generator(str(Path("/m/checkpoints/step-50"))) == "step-50"
