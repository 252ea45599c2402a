"""The command line: every setting is an option with its default, overrides are typed, and
``grouptune train`` / ``grouptune eval`` run end to end on a tiny local model."""

from __future__ import annotations

import json
import re

import pytest

from grouptune import cli
from grouptune.config import iter_fields

EVAL_SECTIONS = cli.EVAL_SECTIONS


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    # argparse wraps long lines; join them so "(default: ...)" can be matched per option
    return re.sub(r"\s+", " ", capsys.readouterr().out)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help_lists_every_option_with_its_default(command, capsys):
    text = help_text(command, capsys)
    names = [name for name, *_ in iter_fields() if command == "train" or name.split(".")[0] in EVAL_SECTIONS]
    assert len(names) > (50 if command == "train" else 30)
    for name, _type, default, help_ in iter_fields():
        if name not in names:
            assert f"--{name} " not in text, f"{command} --help offers {name}, which it does not use"
            continue
        # the option, then its help, then its default (repr), in this order
        first_words = " ".join(help_.split()[:3])
        pattern = re.escape(f"--{name} ") + r".*?" + re.escape(first_words) + r".*?" + re.escape(
            f"(default: {default!r})"
        )
        assert re.search(pattern, text), f"{command} --help: no '{name}' with default {default!r}"


def test_overrides_are_parsed_by_field_type():
    args = cli.build_parser().parse_args([
        "train", "--optim.lr", "3e-6", "--rollout.group_size", "16", "--method.name", "gift",
        "--data.eval", "[a.jsonl, b.jsonl]", "--checkpoint.resume", "true", "--data.prompt_suffix", "123",
    ])  # fmt: skip
    assert cli._overrides(args) == {
        "optim.lr": 3e-6, "rollout.group_size": 16, "method.name": "gift",
        "data.eval": ["a.jsonl", "b.jsonl"], "checkpoint.resume": True, "data.prompt_suffix": "123",
    }  # fmt: skip


def test_wrong_type_and_unknown_option_are_refused(tmp_path, capsys):
    assert cli.main(["train", "--rollout.group_size", "many"]) == 2
    assert "rollout.group_size: expected int" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--rollout.groupsize", "8"])
    assert exit_info.value.code == 2
    assert "--rollout.groupsize" in capsys.readouterr().err


def test_command_line_overrides_the_yaml_file(tiny_llama, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {{name_or_path: {tiny_llama}}}\n"
        f"data: {{train: {tiny_data['train']}, eval: [{tiny_data['eval']}]}}\n"
        "reward: {functions: [gsm8k]}\n"
        "rollout: {prompts_per_batch: 4, group_size: 4, max_new_tokens: 6}\n"
        "method: {name: gft, num_off_policy: 2}\n"
        "optim: {total_batches: 5, steps_per_rollout: 1}\n"
        "log: {eval_samples: 0, progress: false, output_dir: /nonexistent/never-written}\n"
    )
    code = cli.main([
        "train", "--config", str(config), "--method.name", "grpo", "--optim.total_batches", "1",
        "--log.output_dir", str(out), "--log.progress", "true",
    ])  # fmt: skip
    assert code == 0
    saved = (out / "config.yaml").read_text()
    assert saved in capsys.readouterr().out, "the resolved config is printed at start"
    assert "name: grpo" in saved and "total_batches: 1" in saved and "group_size: 4" in saved
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in records if "loss" in r] == [1]
    assert (out / "final" / "model.safetensors").is_file()

    results = tmp_path / "eval.json"
    code = cli.main([
        "eval", "--model.name_or_path", str(out / "final"), "--data.eval", str(tiny_data["eval"]),
        "--reward.functions", "gsm8k", "--rollout.max_new_tokens", "6", "--log.eval_samples", "2",
        "--output", str(results),
    ])  # fmt: skip
    assert code == 0
    table = json.loads(results.read_text())["eval"]
    assert table["n_problems"] == 4 and set(table) >= {"greedy", "avg@2", "pass@2"}
    assert 0.0 <= table["avg@2"] <= table["pass@2"] <= 1.0


def test_bad_config_file_names_the_file_and_setting(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("optim: {learning_rate: 1e-5}\n")
    assert cli.main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "optim.learning_rate" in err
