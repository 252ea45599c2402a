"""MkDocs hook of the grouptune site (``hooks:`` in mkdocs.yml); one source of truth for the
pages that the code already knows.

Generated at build time, where a page holds the marker:

    <!-- grouptune: config-reference -->   every setting of ``grouptune.config`` (through
                                            ``iter_fields``: the ``help`` of each dataclass
                                            field), with its type and default, by section
    <!-- grouptune: method-registry -->    every registered method with its summary, group
                                            members and the defaults it gives the ``None``
                                            settings (``grouptune.methods.METHODS``)
    <!-- grouptune: cli-help COMMAND -->   ``grouptune COMMAND --help`` as the parser prints it

Links that leave ``docs/`` (``../src/...``, ``../tests/...``) work when the Markdown is read
on a forge, but MkDocs can only check files inside ``docs/``. This hook checks that each such
target exists in the repository (a missing one is a warning, which fails ``--strict``) and
rewrites the link for the site: a Python module of ``src/grouptune`` becomes a cross-reference
into the API reference (``[text][grouptune.losses.gft.gft_loss]`` when the link text names a
public object of that module, else the module), which mkdocs-autorefs resolves or reports;
any other file (tests, examples, benchmarks, YAML) becomes its text and repository path.
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import os
import posixpath
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.grouptune_docs")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
MARKER = re.compile(r"<!--\s*grouptune:\s*([\w-]+)\s*([^>]*?)\s*-->")
OUTSIDE_LINK = re.compile(r"\[([^\]\n]+)\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def on_config(config):
    """Document the repository's own ``src`` (not some other installed copy)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    return config


def on_page_markdown(markdown, page, config, files):
    markdown = MARKER.sub(lambda m: _generate(m.group(1), m.group(2), page.file.src_uri), markdown)
    return OUTSIDE_LINK.sub(lambda m: _outside_link(m, page.file.src_uri, config["docs_dir"]), markdown)


def _generate(kind: str, arg: str, where: str) -> str:
    if kind == "config-reference":
        return config_reference()
    if kind == "method-registry":
        return method_registry()
    if kind == "cli-help":
        return cli_help(arg)
    log.warning("%s: unknown generator <!-- grouptune: %s -->", where, kind)
    return ""


# ----------------------------------------------------------------------------- generated pages


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_reference() -> str:
    """One table per section of ``TrainConfig``, rows in the order of the dataclass fields."""
    import dataclasses

    from grouptune.config import TrainConfig, iter_fields

    sections = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    classes = {f.name: getattr(TrainConfig(), f.name).__class__ for f in dataclasses.fields(TrainConfig)}
    rows: dict[str, list[str]] = {name: [] for name in sections}
    for name, type_name, default, help_text in iter_fields():
        section = name.split(".")[0]
        shown = "[*the method's*](#method-defaults)" if default is None else f"`{_yaml(default)}`"
        leaf = name.split(".", 1)[1]  # the section is the heading; the anchor is the dotted name
        rows[section].append(f'| <span id="{name}"></span>`{leaf}` | {type_name} | {shown} | {_cell(help_text)} |')
    out = []
    for section, lines in rows.items():
        cls = classes[section]
        out.append(f"## `{section}` {{#{section}}}\n")
        out.append(f"[`{cls.__name__}`][grouptune.config.{cls.__name__}]")
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{cls.__name__}("):  # not the dataclass's generated signature
            out.append(": " + " ".join(doc.split()))
        out.append(f"\n\n| `{section}.` | type | default | meaning |\n|---|---|---|---|\n")
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


def _default_text(value, config) -> str:
    if not callable(value):
        return f"`{_yaml(value)}`"
    expression = _lambda_body(value)
    computed = value(config)
    return f"`{expression}` ({computed} at the defaults)" if expression else f"computed ({computed} at the defaults)"


def _lambda_body(fn) -> str:
    """The body of a one-line ``lambda c: c.rollout.x // 4`` as ``rollout.x // 4``, else ''."""
    try:
        source = "".join(inspect.getsourcelines(fn)[0])
    except (OSError, TypeError):
        return ""
    found = re.search(r"lambda\s+(\w+)\s*:", source)
    if not found:
        return ""
    body, depth = "", 0
    for char in source[found.end() :]:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0 or (depth == 0 and char in ",\n"):
            break
        body += char
    try:
        ast.parse(body.strip(), mode="eval")
    except SyntaxError:
        return ""
    return body.strip().replace(f"{found.group(1)}.", "")


def method_registry() -> str:
    """The registry as a table, and the value each method gives every ``None`` setting."""
    from grouptune.config import TrainConfig
    from grouptune.methods import BASE_DEFAULTS, METHODS

    config = TrainConfig()
    members = {"none": "—", "demo": "demonstration", "demo+teacher": "demonstration + teachers"}
    out = [
        "| `method.name` | summary | off-policy members | rollouts | scored at the sampling temperature |",
        "|---|---|---|---|---|",
    ]
    for name, m in METHODS.items():
        out.append(
            f"| `{name}` | {_cell(m.summary)} | {members.get(m.off_policy, m.off_policy)} | "
            f"{'yes' if m.on_policy else 'no'} | {'yes' if m.tempered else 'no'} |"
        )
    out += ["", '<span id="method-defaults"></span>', ""]
    out.append("| `method.name` | " + " | ".join(f"`{k}`" for k in BASE_DEFAULTS) + " |")
    out.append("|---|" + "---|" * len(BASE_DEFAULTS))
    for name, m in METHODS.items():
        values = {**BASE_DEFAULTS, **m.defaults}
        cells = []
        for key in BASE_DEFAULTS:
            text = _default_text(values[key], config)
            cells.append(f"**{text}**" if key in m.defaults else text)
        out.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def cli_help(command: str) -> str:
    from grouptune.cli import build_parser

    parser = build_parser()
    argv = command.split() + ["--help"]
    buffer = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with redirect_stdout(buffer):
            parser.parse_args(argv)
    except SystemExit:
        pass
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "```text\n$ grouptune " + " ".join(argv) + "\n" + buffer.getvalue().rstrip() + "\n```\n"


# ----------------------------------------------------------------------------- links out of docs/

_GRIFFE = {}


def _package():
    if "grouptune" not in _GRIFFE:
        import griffe

        _GRIFFE["grouptune"] = griffe.load("grouptune", search_paths=[str(SRC)], allow_inspection=False)
    return _GRIFFE["grouptune"]


def _public_object(module: str, name: str) -> str:
    """``module.name`` when it names a public object defined there (so the API reference has it)."""
    if not re.fullmatch(r"[A-Za-z]\w*(\.[A-Za-z]\w*)*", name):
        return ""
    try:
        obj = _package()[f"{module}.{name}".removeprefix("grouptune.")]
    except KeyError:
        return ""
    if getattr(obj, "is_alias", False):
        return ""
    return f"{module}.{name}"


def _outside_link(match: re.Match, page_uri: str, docs_dir: str) -> str:
    text, target = match.group(1), match.group(2)  # an anchor into a source file is dropped
    page_dir = posixpath.dirname(page_uri)
    path = (Path(docs_dir) / page_dir / target).resolve()
    try:
        rel = path.relative_to(ROOT).as_posix()
    except ValueError:
        log.warning("Doc file '%s' links to '%s', outside the repository", page_uri, target)
        return match.group(0)
    if not path.exists():
        log.warning("Doc file '%s' links to '%s', but the repository has no '%s'", page_uri, target, rel)
        return match.group(0)
    if rel.startswith("src/grouptune") and (path.suffix == ".py" or path.is_dir() and (path / "__init__.py").exists()):
        parts = Path(rel).relative_to("src").with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        inner = text.strip("`") if text.startswith("`") and text.endswith("`") else ""
        identifier = _public_object(module, inner) or module
        return f"[{text}][{identifier}]"
    code = text.startswith("`") and text.endswith("`")
    if code and rel.endswith(text.strip("`").rstrip("/")):
        return f"`{rel}`"
    return f"{text} (`{rel}`)"
