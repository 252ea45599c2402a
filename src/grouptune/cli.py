"""Command line: a thin layer over the library.

    grouptune train --config run.yaml --method.name gift --optim.lr 3e-6
    grouptune train --config pipeline.yaml      # stages: sft -> gft -> grpo, each from the last one's final/
    grouptune eval  --model.name_or_path runs/x/final --data.eval test.jsonl --reward.functions math
    grouptune eval  --model.name_or_path runs/x/final --suite gft_math --suite-data benchmarks/
    grouptune eval  --model.name_or_path runs/x/final --data.eval prompts.jsonl --export-alpaca-eval outputs/
    grouptune demo  [--method gft]
    grouptune compare --suite gft_table

Every setting of ``grouptune.config`` is an option, named by its dotted path; ``--help``
lists each with its default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from grouptune.config import ConfigError, config_to_yaml, iter_fields, load_config, parse_cli_value
from grouptune.data import DataError

EVAL_SECTIONS = ("model", "data", "reward", "rollout", "vllm", "log")


def _add_config_options(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    parser.add_argument("--config", help="YAML file of settings; options given here override it.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, type_name, default, help_text in iter_fields():
        section = name.split(".")[0]
        if sections is not None and section not in sections:
            continue
        group = groups.setdefault(section, parser.add_argument_group(section))
        group.add_argument(
            f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=type_name.upper(),
            help=f"{help_text} (default: {default!r})".replace("%", "%%"),
        )  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict:
    """Dotted options given on the command line, parsed by the type of their field."""
    import yaml

    types = {name: type_name for name, type_name, _, _ in iter_fields()}
    out = {}
    for key, raw in vars(args).items():
        if key in types:
            try:
                out[key] = raw if types[key] == "str" else parse_cli_value(raw)
            except yaml.YAMLError as e:
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"--{key} {raw!r}: cannot be read as a value ({problem})") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grouptune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="Post-train a model with one method.", formatter_class=_Fmt, epilog=_methods_epilog(),
    )  # fmt: skip
    _add_config_options(train)

    ev = sub.add_parser(
        "eval", help="Greedy accuracy, avg@k and pass@k of a model on held-out data.", formatter_class=_Fmt,
        description="Evaluate on every data.eval data set with log.eval_samples samples per prompt.",
    )  # fmt: skip
    _add_config_options(ev, EVAL_SECTIONS)
    ev.add_argument("--output", default="", help="Write the results as JSON to this file (default: '').")
    ev.add_argument("--suite", default="", help="Evaluate on a paper's benchmarks instead of data.eval: gft_math, "
                    "gift_math or gft_fig4 (docs/evaluation.md#suites); same as --log.eval_suite (default: '').")
    ev.add_argument("--suite-data", default="", metavar="DIR", help="Directory of downloaded benchmark files, "
                    "DIR/<benchmark>/test.jsonl; same as --log.eval_suite_data (default: hub copies).")
    ev.add_argument("--suite-source", action="append", default=[], metavar="BENCHMARK=SOURCE",
                    help="Read one benchmark of the suite from this file or hub name (repeatable).")
    ev.add_argument("--export-alpaca-eval", default="", metavar="DIR", help="Also write each data.eval set's greedy "
                    "completions to DIR/<data set>.json in AlpacaEval's model-outputs format, for an external judge; "
                    "sets without gold answers are exported only; an existing file is refused unless --log.overwrite "
                    "true (docs/evaluation.md#exporting-completions-for-an-external-judge) (default: '').")
    ev.add_argument("--generator", default="", metavar="NAME", help="The export's generator name (default: the "
                    "model path's last part; for a run's final/ model, the run directory's name).")

    from grouptune.testbed import commands

    commands.add_subcommands(sub, _Fmt)
    return parser


def _methods_epilog() -> str:
    """The registered methods (``--method.name``), each with its one-line summary."""
    from grouptune.methods import METHODS

    width = max(map(len, METHODS))
    lines = [f"  {name:<{width}}  {m.summary}" for name, m in METHODS.items()]
    return "methods (--method.name; the math: docs/methods.md):\n" + "\n".join(lines)


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def main(argv: list[str] | None = None) -> int:
    """Exit status 2, with one ``grouptune:`` message and no traceback, for what the user must fix:
    a setting, the data, the output directory (in use, or holding another run), a checkpoint
    that cannot be read or written (disk full, permissions), an unwritable ``--output``."""
    from grouptune.checkpoint import CheckpointError
    from grouptune.rundir import OutputDirError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        return args.run(args)
    except OutputDirError as e:
        return _fail(str(e))
    except ConfigError as e:
        return _fail(f"configuration error: {e}")
    except DataError as e:
        return _fail(f"data error: {e}")
    except CheckpointError as e:
        return _fail(str(e) if str(e).startswith("could not write") else f"checkpoint error: {e}")


def _fail(message: str, status: int = 2) -> int:
    print(f"grouptune: {message}", file=sys.stderr, flush=True)
    return status


def _train(args: argparse.Namespace) -> int:
    """Exit status: 0 done; 1 stopped by non-finite steps (``TrainingError``) or by a reward
    function that raised or ran out of time (``RewardError``, printed after the function's own
    traceback); 2 refused or could not write (see ``main``); 128 + N stopped by signal N
    (SIGTERM 143, SIGINT 130) after saving a checkpoint to resume from. A config with ``stages``
    runs them in order (``grouptune.pipeline``), stopping at the first that fails."""
    from grouptune.pipeline import finished, stage_configs

    stages = stage_configs(args.config, _overrides(args))
    if stages is None:
        return _train_one(load_config(args.config, _overrides(args)))
    for i, cfg in enumerate(stages):
        if finished(cfg):
            print(f"grouptune: stage {i} ({cfg.method.name}) already has its final model in {cfg.log.output_dir}; "
                  "skipped", file=sys.stderr)  # fmt: skip
            continue
        print(f"grouptune: stage {i} of {len(stages)}: {cfg.method.name} -> {cfg.log.output_dir}", file=sys.stderr)
        code = _train_one(cfg)
        if code:
            return code
    return 0


def _train_one(cfg) -> int:
    from grouptune.rewards import RewardError
    from grouptune.trainer import Trainer, TrainingError

    trainer = Trainer(cfg)
    if trainer.acc.is_main_process and cfg.log.progress:  # also saved as <output_dir>/config.yaml
        print(config_to_yaml(trainer.cfg), flush=True)  # resolved: the method's defaults filled in
    try:
        trainer.train()
    except TrainingError as e:
        return _fail(f"training stopped: {e}", 1)
    except RewardError as e:
        if e.__cause__ is not None:  # where the user's function raised, or where it was when stopped
            traceback.print_exception(e.__cause__, file=sys.stderr)
        return _fail(f"reward error: {e}", 1)
    if trainer.stop_signal is not None:
        print(f"grouptune: interrupted by signal {trainer.stop_signal} at rollout batch {trainer.state['batch']}; "
              "checkpoint saved, continue with --checkpoint.resume true", file=sys.stderr)
        return 128 + trainer.stop_signal
    return 0


def _eval(args: argparse.Namespace) -> int:
    from grouptune.evaluation import evaluate_model
    from grouptune.metrics import format_table

    cfg = load_config(args.config, _overrides(args))
    if args.output:
        _check_writable(Path(args.output))  # before the evaluation, not after it
    suite = args.suite or cfg.log.eval_suite
    export = _export(args, cfg)
    if suite and export is not None:
        raise ConfigError("--export-alpaca-eval writes the completions of the data.eval sets; it does not apply "
                          "to --suite (log.eval_suite)")  # fmt: skip
    if suite:
        from grouptune.suites import format_suite_table, parse_sources, run_suite

        sources = parse_sources(args.suite_source)
        results = run_suite(cfg, suite, args.suite_data or cfg.log.eval_suite_data, sources)
        print(format_suite_table(results))
    else:
        results = evaluate_model(cfg, export)
        print(format_table(results))
    if args.output:
        tmp = Path(args.output).with_name(Path(args.output).name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.output)
    return 0


def _export(args: argparse.Namespace, cfg):
    """The ``--export-alpaca-eval`` of this evaluation, or None."""
    if not args.export_alpaca_eval:
        if args.generator:
            raise ConfigError("--generator names the model in an export: it needs --export-alpaca-eval DIR")
        return None
    from grouptune.evaluation import AlpacaEvalExport, default_generator

    generator = args.generator or default_generator(cfg.model.name_or_path)
    return AlpacaEvalExport(Path(args.export_alpaca_eval).expanduser(), generator, cfg.log.overwrite)


def _check_writable(path: Path) -> None:
    """``ConfigError`` unless a file can be written at ``path`` (its directory exists and takes files)."""
    where = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"--output {path}: is a directory; name a file")
    if not where.is_dir():
        raise ConfigError(f"--output {path}: directory {where} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"--output {path}: the file is not writable")
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".grouptune-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"--output {path}: cannot write in {where}: {e.strerror or e}") from None


if __name__ == "__main__":
    sys.exit(main())
