"""The documentation cannot drift from the code: the site builds with ``mkdocs build --strict``
(a broken link, anchor, page or cross-reference fails), and the code that README.md and
docs/*.md show is run or checked.

Every fenced block is handled by its language and by the ``<!-- docs-test: ... -->`` markers on
the lines just before it (docs/development.md#documentation lists them):

- ``python``: run, in one namespace per page, in a scratch directory seeded with a small
  ``train.jsonl``, ``test.jsonl`` and the ``run.yaml`` of docs/getting-started.md (its
  ``file run.yaml tiny`` block, pointed at a tiny local model with a one-batch budget);
- ``bash``: ``bash -n``, then each command: ``grouptune`` commands are parsed by the CLI's
  parser, their settings loaded by the configuration loader, and run; other commands are
  checked without running them (a script's options by its own parser, a pip extra against
  pyproject.toml, a launcher's config file by its existence, a pytest or ruff path by its
  existence); an unknown program fails until a rule or a marker says what to do with it;
- ``yaml``: parsed, and loaded as a run configuration when its keys are settings sections;
- ``json``: parsed (JSON or JSON Lines); ``text``: left alone, unless it is a ``layout``.

``skip-gpu``, ``needs-download`` and ``long`` blocks are checked but never run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC_PACKAGE = ROOT / "src" / "grouptune"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PAGES_WITH_CODE = [p for p in PAGES if "```" in p.read_text(encoding="utf-8")]

MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^`]*$")
PARSE_ONLY = {"skip-gpu", "needs-download", "long"}
MARKERS = PARSE_ONLY | {"run-with", "file", "setup", "layout"}
LANGUAGES = {"python", "bash", "sh", "shell", "yaml", "yml", "json", "jsonl", "text", ""}
SECTIONS = {"model", "data", "reward", "rollout", "method", "optim", "log", "checkpoint"}
OPTIONAL_EXTRAS = {"trl", "peft", "deepspeed", "bitsandbytes", "vllm"}
OTHER_TOOLS = {"mkdocs", "git", "cd", "export", "echo"}  # programs the docs may name that need no check here

# What `file run.yaml tiny` changes in the documented run config: a tiny local model, a few
# tokens, one rollout batch of two prompts, evaluation on two examples.
TINY = {
    "model.dtype": "float32",
    "data.max_prompt_length": 200,
    "data.max_eval_examples": 2,
    "rollout.prompts_per_batch": 2,
    "rollout.max_new_tokens": 8,
    "rollout.generation_batch_size": 0,
    "optim.total_batches": 1,
    "optim.steps_per_rollout": 1,
    "optim.micro_batch_groups": 0,
    "log.eval_every": 0,
    "log.eval_samples": 2,
    "log.progress": False,
    "checkpoint.save_every": 0,
}


# ----------------------------------------------------------------------------- reading the pages


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    markers: list[tuple[str, list[str]]]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def marker(self, name: str) -> list[str] | None:
        return next((args for marker, args in self.markers if marker == name), None)

    @property
    def parse_only(self) -> bool:
        return any(marker in PARSE_ONLY for marker, _ in self.markers)


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, each with the docs-test markers just before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        if found := MARKER.match(lines[i]):
            for part in found.group(1).split(";"):
                words = shlex.split(part)
                assert words, f"{page.name}:{i + 1}: an empty docs-test marker"
                pending.append((words[0], words[1:]))
        elif found := FENCE.match(lines[i]):
            indent, fence = found.group("indent"), found.group("fence")
            close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            end = i + 1
            while end < len(lines) and not close.match(lines[end]):
                end += 1
            body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
            blocks.append(Block(page, i + 1, found.group("lang").lower(), "\n".join(body) + "\n", pending))
            pending, i = [], end
        elif lines[i].strip() and pending:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i}: a docs-test marker must come just before a code block")
        i += 1
    assert not pending, f"{page.relative_to(ROOT)}: a docs-test marker at the end, with no code block after it"
    return blocks


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ----------------------------------------------------------------------------- the scratch directory


def tiny_rows(n: int) -> list[dict]:
    """Rows every documented data layout can read: default columns and the `math` preset's."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        solution = f"{a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}."
        rows.append({
            "prompt": f"What is {a} + {b}?", "problem": f"What is {a} + {b}?", "answer": str(a + b),
            "solution": solution, "completion": solution,
            "teacher_completions": [f"\\boxed{{{a + b}}}", f"{a}+{b} is \\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}"],
        })  # fmt: skip
    return rows


def nested(dotted: dict) -> dict:
    from grouptune.config import dotted_to_nested

    return dotted_to_nested(dotted)


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_run_config(text: str, where: str):
    """A YAML block of settings through the same loader as ``--config``."""
    import tempfile

    from grouptune.config import load_config
    from grouptune.methods import check_method_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(text)
        cfg = load_config(path)
    check_method_config(cfg.method)
    return cfg


@dataclass
class Scratch:
    workdir: Path
    placeholders: dict[str, str]
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    shell_vars: dict[str, str] = field(default_factory=dict)


def documented_run_yaml() -> str:
    """The `file run.yaml tiny` block (docs/getting-started.md): there must be exactly one."""
    found = [b for p in PAGES_WITH_CODE for b in code_blocks(p) if (b.marker("file") or [None])[0] == "run.yaml"]
    assert len(found) == 1, f"expected one `docs-test: file run.yaml` block, found {[b.where for b in found]}"
    return found[0].code


def tiny_config_text(text: str, tiny_model: Path) -> str:
    return yaml.safe_dump(merge(yaml.safe_load(text), nested({**TINY, "model.name_or_path": str(tiny_model)})))


@pytest.fixture
def scratch(tmp_path, tiny_qwen2, tiny_llama, monkeypatch) -> Scratch:
    from grouptune.methods import METHODS

    for name, rows in (("train.jsonl", tiny_rows(8)), ("test.jsonl", tiny_rows(4))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.yaml").write_text(tiny_config_text(documented_run_yaml(), tiny_qwen2))
    monkeypatch.chdir(tmp_path)
    registered = dict(METHODS)
    yield Scratch(tmp_path, {"tiny_qwen2": str(tiny_qwen2), "tiny_llama": str(tiny_llama)})
    METHODS.clear()
    METHODS.update(registered)  # a page may register a method of its own
    reset_accelerate()


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


# ----------------------------------------------------------------------------- python blocks


def setup_trl(scratch: Scratch):
    """`setup trl`: what the README's switch from TRL's GRPO takes as given, tiny and local."""
    from datasets import Dataset

    from grouptune.rewards import GSM8KReward

    rows = [
        {"prompt": r["prompt"], "answer": f"#### {r['answer']}", "completion": f"{r['solution']} #### {r['answer']}",
         "teacher_completions": r["teacher_completions"]}
        for r in tiny_rows(4)
    ]  # fmt: skip
    args = dict(
        output_dir=str(scratch.workdir / "trl"), num_generations=8, per_device_train_batch_size=8,
        gradient_accumulation_steps=1, max_steps=1, max_completion_length=8, learning_rate=1e-5,
        use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
    )  # fmt: skip
    names = {"model": scratch.placeholders["tiny_qwen2"], "reward": GSM8KReward("flexible"), "args": args,
             "ds": Dataset.from_list(rows)}  # fmt: skip

    def after(namespace: dict) -> None:
        namespace["trainer"].train()  # the last trainer of the block, for one step

    return names, after


SETUPS = {"trl": (setup_trl, "trl")}  # name -> (set-up, the optional extra it needs)


def python_block(block: Block, scratch: Scratch) -> None:
    compiled = compile(block.code, block.where, "exec")  # a syntax error fails here, whatever the markers
    if name := (block.marker("file") or [None])[0]:
        (scratch.workdir / name).write_text(block.code)
        return
    if block.parse_only:
        return
    namespace, after = scratch.namespace, None
    if setup := block.marker("setup"):
        make, extra = SETUPS[setup[0]]
        if importlib.util.find_spec(extra) is None:
            warnings.warn(f"{block.where}: {extra} is not installed, the block was only parsed", stacklevel=1)
            return
        names, after = make(scratch)
        namespace = {**scratch.namespace, **names}
    reset_accelerate()
    exec(compiled, namespace)
    if after:
        after(namespace)


# ----------------------------------------------------------------------------- shell blocks


class _ArgumentsParsed(Exception):
    """Raised from a patched ``parse_args`` once a script has accepted its arguments."""


def script_accepts(run, prog: str, argv: list[str], where: str) -> None:
    """Run a script's ``__main__`` only as far as its argument parser (which must accept ``argv``)."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise _ArgumentsParsed

    stderr = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        mock.patch.object(sys, "argv", [prog, *argv]),
        mock.patch.object(sys, "path", list(sys.path)),  # a script may add its own directory
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules"
        try:
            run()
        except _ArgumentsParsed:
            return
        except SystemExit as e:
            pytest.fail(f"{where}: `{prog} {shlex.join(argv)}` is refused by its parser ({e.code}):\n{stderr.getvalue()}")
        except ModuleNotFoundError as e:
            if e.name in OPTIONAL_EXTRAS:
                warnings.warn(f"{where}: {e.name} is not installed, `{prog}` was not checked", stacklevel=1)
                return
            raise
    pytest.fail(f"{where}: `{prog}` never parsed its arguments")


def python_command(args: list[str], block: Block, scratch: Scratch) -> None:
    if args[:1] == ["-c"]:
        ast.parse(args[1])
        return
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module == "grouptune.cli":
            return grouptune_command(rest, block, scratch, run=False)
        if module == "pytest":
            return paths_exist([a.split("::")[0] for a in rest if not a.startswith("-") and "/" in a], block)
        if module in ("venv", "mkdocs", "pip"):
            return
        assert importlib.util.find_spec(module), f"{block.where}: no module {module}"
        return script_accepts(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), module, rest,
                              block.where)  # fmt: skip
    script = ROOT / args[0]
    assert args[0].endswith(".py") and script.is_file(), f"{block.where}: no script {args[0]} in the repository"
    script_accepts(lambda: runpy.run_path(str(script), run_name="__main__"), args[0], args[1:], block.where)


def paths_exist(paths: list[str], block: Block) -> None:
    for path in paths:
        assert (ROOT / path).exists(), f"{block.where}: {path} does not exist in the repository"


def pip_command(args: list[str], block: Block) -> None:
    extras = set(importlib.metadata.metadata("grouptune").get_all("Provides-Extra") or [])
    for arg in args[1:]:
        if found := re.fullmatch(r"(?:grouptune|\.)\[([\w,-]+)\]", arg):
            unknown = set(found.group(1).split(",")) - extras
            assert not unknown, f"{block.where}: grouptune has no extra {sorted(unknown)} (it has {sorted(extras)})"


def launcher_command(tool: str, args: list[str], block: Block, scratch: Scratch) -> None:
    """``accelerate launch`` / ``torchrun``: its config file exists, and what it launches is checked."""
    if tool == "accelerate":
        assert args[:1] == ["launch"], f"{block.where}: only `accelerate launch` has a rule"
        args = args[1:]
    if "--config_file" in args:
        config = Path(args[args.index("--config_file") + 1])
        assert config.is_file(), f"{block.where}: no accelerate config {config}"
    if "-m" in args:
        i = args.index("-m")
        return python_command(args[i:], block, scratch)
    script = next((i for i, a in enumerate(args) if a.endswith(".py")), None)
    assert script is not None, f"{block.where}: `{tool}` launches neither a module nor a script"
    python_command(args[script:], block, scratch)


def config_path(name: str) -> str:
    return name if Path(name).exists() else str(ROOT / name)


def grouptune_command(args: list[str], block: Block, scratch: Scratch, run: bool | None = None) -> None:
    """Parsed by the CLI's parser, its settings loaded; run unless the block says otherwise."""
    from grouptune import cli
    from grouptune.config import TrainConfig, dotted_to_nested, load_config, parse_cli_value, update_config
    from grouptune.methods import METHODS, resolve_method
    from grouptune.testbed.commands import load_suite

    run = not block.parse_only if run is None else run
    command = f"grouptune {shlex.join(args)}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ns = cli.build_parser().parse_args(args)
        except SystemExit as e:
            if e.code == 0 and ("--help" in args or "-h" in args):
                return
            pytest.fail(f"{block.where}: `{command}` is refused by the parser:\n{err.getvalue()}")
    if ns.command in ("train", "eval"):
        cfg = load_config(ns.config and config_path(ns.config), cli._overrides(ns))
        if ns.command == "train":
            resolve_method(cfg)
    elif ns.command == "compare":
        load_suite(ns.suite)
        for item in ns.set:
            key, _, value = item.partition("=")
            update_config(TrainConfig(), dotted_to_nested({key: parse_cli_value(value)}))
    elif ns.command == "demo":
        unknown = {m.strip() for m in ns.methods.split(",")} - set(METHODS)
        assert not unknown, f"{block.where}: no method {sorted(unknown)}"
    if not run:
        return
    extra = []
    for item in block.marker("run-with") or []:
        key, _, value = item.partition("=")
        extra += [f"--{key}", value.format_map(scratch.placeholders)]
    reset_accelerate()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(args + extra)
    assert status == 0, f"{block.where}: `{command}` exited with {status}:\n{err.getvalue()[-3000:]}"


def shell_commands(code: str, scratch: Scratch, where: str):
    """Each simple command of a shell block as a list of words; ``NAME=$(python -c "...")``
    assignments are evaluated (in this process) so later ``$NAME`` expand as bash would."""
    for line in code.replace("\\\n", " ").splitlines():
        if found := re.fullmatch(r"\s*(\w+)=\$\(python3? -c \"([^\"]*)\"\)(\S*)\s*(#.*)?", line):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(found.group(2), {})
            scratch.shell_vars[found.group(1)] = out.getvalue().strip() + found.group(3)
            continue
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: scratch.shell_vars.get(m.group(1), m.group(0)), line)
        words: list[str] = []
        for word in shlex.split(line, comments=True):
            ends = word.endswith(";") and word != ";"  # `cmd arg; }`: the word ends the command
            word = word.removesuffix(";") if ends else word
            if word in ("&&", "||", ";", "|", "{", "}"):  # separators, and a { ...; } group's braces
                if words:
                    yield words
                words = []
            else:
                words.append(word)
            if ends and words:
                yield words
                words = []
        if words:
            yield words


def shell_block(block: Block, scratch: Scratch) -> None:
    syntax = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.where}: not valid shell: {syntax.stderr}"
    for words in shell_commands(block.code, scratch, block.where):
        while words and re.fullmatch(r"\w+=\S*", words[0]):
            words = words[1:]  # FOO=bar command
        if words[:1] == ["nice"]:
            words = words[3:] if words[1:2] == ["-n"] else words[1:]
        program, args = Path(words[0]).name, words[1:]
        if program == "grouptune":
            grouptune_command(args, block, scratch)
        elif program in ("python", "python3"):
            python_command(args, block, scratch)
        elif program == "pip":
            pip_command(args, block)
        elif program in ("accelerate", "torchrun"):
            launcher_command(program, args, block, scratch)
        elif program == "ruff":
            paths_exist([a for a in args[1:] if not a.startswith("-")], block)
        elif program not in OTHER_TOOLS:
            pytest.fail(f"{block.where}: no rule for `{program}`: add one to tests/test_docs.py or mark the block")


# ----------------------------------------------------------------------------- other blocks


def yaml_block(block: Block, scratch: Scratch) -> None:
    values = yaml.safe_load(block.code)
    if isinstance(values, dict) and values and set(values) <= SECTIONS:
        load_run_config(block.code, block.where)  # unknown settings and wrong types fail here
    if file := block.marker("file"):
        text = block.code
        if "tiny" in file[1:]:
            text = tiny_config_text(text, Path(scratch.placeholders["tiny_qwen2"]))
        (scratch.workdir / file[0]).write_text(text)


def json_block(block: Block, scratch: Scratch) -> None:
    try:
        json.loads(block.code)
    except json.JSONDecodeError:
        for line in filter(str.strip, block.code.splitlines()):
            json.loads(line)  # JSON Lines
    if file := block.marker("file"):
        (scratch.workdir / file[0]).write_text(block.code)


def layout_block(block: Block) -> None:
    """Every path of a layout exists; a layout of ``src/grouptune/`` names all its modules."""
    base, listed = None, set()
    for line in filter(str.strip, block.code.splitlines()):
        indented = line.startswith(" ")
        for name in re.split(r"\s{2,}", line.strip())[0].split():
            path = (base / name) if indented and base else ROOT / name
            assert path.exists(), f"{block.where}: the layout names {name}, which does not exist"
            if path.parent == SRC_PACKAGE:
                listed.add(path.name)
            if not indented:
                base = path
    if block.code.startswith("src/grouptune/"):
        modules = {p.name for p in SRC_PACKAGE.iterdir() if not p.name.startswith("__") and p.suffix in (".py", "")}
        missing = modules - listed
        assert not missing, f"{block.where}: add {sorted(missing)} to the layout in {block.page.name}"


def check_block(block: Block, scratch: Scratch) -> None:
    if block.lang == "python":
        python_block(block, scratch)
    elif block.lang in ("bash", "sh", "shell"):
        shell_block(block, scratch)
    elif block.lang in ("yaml", "yml"):
        yaml_block(block, scratch)
    elif block.lang in ("json", "jsonl"):
        json_block(block, scratch)
    elif block.marker("layout") is not None:
        layout_block(block)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_markers_are_known_and_every_block_has_a_handler(page):
    for block in code_blocks(page):
        assert block.lang in LANGUAGES, f"{block.where}: no handler for ```{block.lang} blocks in tests/test_docs.py"
        for marker, args in block.markers:
            assert marker in MARKERS, f"{block.where}: unknown docs-test marker {marker!r}; known: {sorted(MARKERS)}"
            if marker in ("file", "setup"):
                assert args, f"{block.where}: `{marker}` needs a name"
            if marker == "setup":
                assert args[0] in SETUPS, f"{block.where}: no set-up {args[0]!r}; known: {sorted(SETUPS)}"
            if marker == "run-with":
                assert args and all("=" in a for a in args), f"{block.where}: run-with takes KEY=VALUE pairs"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_code_blocks_run(page, scratch):
    for block in code_blocks(page):
        check_block(block, scratch)


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: pages, links, anchors, the generated pages and the API reference."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-10000:]
    reference = (site / "configuration" / "index.html").read_text()
    from grouptune.config import iter_fields

    for name, *_ in iter_fields():
        assert f'id="{name}"' in reference, f"the configuration reference lacks {name}"
    assert "grouptune.losses.gft.gft_loss" in (site / "api" / "losses" / "index.html").read_text()


def load_hook():
    spec = importlib.util.spec_from_file_location("grouptune_docs_hook", ROOT / "docs" / "hooks" / "grouptune_docs.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_hook_checks_links_out_of_docs(caplog):
    hook = load_hook()
    docs = str(ROOT / "docs")

    def rewrite(markdown: str) -> str:
        return hook.OUTSIDE_LINK.sub(lambda m: hook._outside_link(m, "methods.md", docs), markdown)

    assert rewrite("[`gft_loss`](../src/grouptune/losses/gft.py)") == "[`gft_loss`][grouptune.losses.gft.gft_loss]"
    assert rewrite("[`_gft`](../src/grouptune/methods.py)") == "[`_gft`][grouptune.methods]"
    assert rewrite("[the tests](../tests/losses/test_losses.py)") == "the tests (`tests/losses/test_losses.py`)"
    assert rewrite("[`tests/losses/test_losses.py`](../tests/losses/test_losses.py)") == "`tests/losses/test_losses.py`"
    with caplog.at_level(logging.WARNING):
        assert rewrite("[gone](../src/grouptune/gone.py)") == "[gone](../src/grouptune/gone.py)"
    assert "no 'src/grouptune/gone.py'" in caplog.text


def test_hook_is_lint_clean():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "docs/hooks"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_inline_grouptune_commands_parse(page):
    """`grouptune ...` in running text is accepted by the CLI's parser too (NAME-like words are
    placeholders)."""
    from grouptune import cli

    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for command in re.findall(r"`grouptune ([a-z][^`]*)`", text):
        words = [w for w in shlex.split(command) if not re.fullmatch(r"[A-Z][A-Z_]+", w)]
        if words[-1:] == ["--suite"]:
            words.append("gft_table")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                cli.build_parser().parse_args(words)
            except SystemExit as e:
                assert e.code == 0, f"{page_id(page)}: `grouptune {command}` is refused: {err.getvalue()}"


# ----------------------------------------------------------------------------- the README


README = ROOT / "README.md"


def github_anchors(page: Path) -> set[str]:
    """Heading anchors as a forge makes them, plus explicit ``id="..."`` anchors."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", text, flags=re.S | re.M)  # no headings inside code
    anchors = set(re.findall(r'id="([^"]+)"', text))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_readme_fits_on_a_screen_and_a_half():
    assert len(README.read_text().splitlines()) <= 200


def test_readme_links_resolve():
    """Relative links work on a forge: the file exists, and so does the heading an anchor names."""
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 30
    for link in links:
        if re.match(r"\w+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        assert target.exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert anchor in github_anchors(target), f"README links to {link}: {path or 'README.md'} has no #{anchor}"


def test_readme_links_every_page_of_the_docs():
    text = README.read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"](docs/{page.name}" in text, f"README.md does not link docs/{page.name}"
    assert "](docs/api/index.md)" in text


def test_methods_tables_list_every_registered_method():
    from grouptune.methods import METHODS

    readme = set(re.findall(r"^\| `(\w+)` \|", README.read_text(), flags=re.M))
    assert readme == set(METHODS), "README's methods table and the registry differ"
    math = set(re.findall(r"^\| \[`(\w+)`\]\(#", (ROOT / "docs" / "methods.md").read_text(), flags=re.M))
    assert math == set(METHODS), "docs/methods.md's table and the registry differ"


def test_two_commands_are_what_ci_runs():
    """The README's test command is .ci/run's; the site's home page shows the README's two."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    section = README.read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = [b.code.strip() for b in code_blocks(README) if b.code.strip() in section]
    assert len(commands) == 2 and commands[1] == ci, (commands, ci)
    home = [b.code.strip() for b in code_blocks(ROOT / "docs" / "index.md") if b.lang == "bash"]
    assert home == commands
