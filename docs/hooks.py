"""MkDocs hooks (mkdocs.yml ``hooks:``): the site's tables of flags and options, generated from the code when
the site is built, so that they cannot go stale.

A page writes a marker where a table goes:

    <!-- generated: train-flags -->         train.py's flags: every option block's options + the launcher's own
    <!-- generated: eval-flags -->          eval.py's flags: its own, the general ones, every section's
    <!-- generated: model-options NAME -->  the options model NAME reads beyond the run's own

Each row comes from the declaration beside the code that reads it (``mvae_jax.options.Option``: its default and
help) or from the command's argparse parser for the flags that are not options: what ``--help`` prints.
tests/test_docs.py checks the tables against the parsers.

Notebook pages get an "Open in Colab" badge once mkdocs.yml names the repository (``repo_url`` on GitHub; the
branch: ``extra.colab_branch``, default main): the badge opens the notebook from there, so without a public
repository there is none rather than a dead link.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import re
import sys

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- generated: ([a-z-]+)(?: (\w+))? -->")


def _cell(text: str) -> str:
    """``text`` safe in a markdown table cell (``|`` escaped; ``<term>`` not read as an HTML tag)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _split_default(help_text: str | None) -> tuple[str, str | None]:
    """(help without its trailing "(default: ...)", that default or None)."""
    help_text = help_text or ""
    at = help_text.rfind(" (default: ")
    if at < 0 or not help_text.endswith(")"):
        return help_text, None
    return help_text[:at], help_text[at + len(" (default: ") : -1]


def _option_row(option, readers: tuple[str, ...] = ()) -> str:
    shown = option.shown_default()
    # a code span shows <model> as typed; plain words are escaped like the rest
    default = f"`{shown}`" if option.kind != "bool" and " " not in shown else _cell(shown)
    who = f"{', '.join(readers)}: " if readers else ""
    return f"| `--{option.name}` | {default} | {_cell(who + option.help)} |"


def _parser_rows(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    """One row per flag of ``parser`` not in ``skip`` (nor --help), from its help and default."""
    rows = []
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or flag == "--help" or flag[2:] in skip:
            continue
        meaning, default = _split_default(action.help)
        if isinstance(action, argparse._StoreTrueAction):
            default = "off"
        elif default is None:
            default = "" if action.default is None else str(action.default)
        rows.append(f"| `{flag}` | {_cell(default)} | {_cell(meaning)} |")
    return rows


HEADER = ["| flag | default | meaning |", "| --- | --- | --- |"]


def train_flags_table() -> str:
    """train.py's flags: one row per option of every block (with the models / data sets that read it), then the
    launcher's own flags (--config, --distributed, --verbose, --compilation_cache) from its parser."""
    from mvae_jax import config as config_lib
    from mvae_jax.commands import train

    rows = [_option_row(option, config_lib.readers(name)) for name, option in config_lib.OPTIONS.items()]
    rows += _parser_rows(train.make_parser(), set(config_lib.OPTIONS))
    return "\n".join(HEADER + rows)


def eval_flags_table() -> str:
    """eval.py's flags, from its parser (which builds them from the general options and each section's)."""
    from mvae_jax.commands import evaluate

    return "\n".join(HEADER + _parser_rows(evaluate.make_parser(), set()))


def model_options_table(name: str) -> str:
    """The options model ``name`` reads beyond the run's own (its ``OPTIONS`` block)."""
    from mvae_jax.models import OPTIONS

    if name not in OPTIONS:
        raise ValueError(f"no model {name!r}; models: {', '.join(OPTIONS)}")
    if not OPTIONS[name]:
        return "This model reads no options beyond the run's own."
    return "\n".join(HEADER + [_option_row(option) for option in OPTIONS[name]])


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by its table; ValueError for an unknown marker."""

    def table(match: re.Match) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "train-flags":
            return train_flags_table()
        if kind == "eval-flags":
            return eval_flags_table()
        if kind == "model-options" and argument:
            return model_options_table(argument)
        raise ValueError(f"unknown generated table {match.group(0)!r}: train-flags, eval-flags, model-options NAME")

    return MARKER.sub(table, markdown)


def on_startup(command, dirty):
    """The tables import the package from this tree (a clone without ``pip install -e .`` builds too)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def on_page_markdown(markdown, page, config, files):
    return expand(markdown)


COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_url(repo_url: str | None, branch: str, path: str) -> str | None:
    """Colab's address of the notebook ``path`` (from the repository root) in the GitHub repository ``repo_url``,
    or None where the repository is not on GitHub (or not named)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", repo_url or "")
    if match is None:
        return None
    return f"https://colab.research.google.com/github/{match.group(1)}/blob/{branch}/{path}"


def on_post_page(output, page, config):
    """The Colab badge at the top of a notebook page, where the repository is known."""
    if not page.file.src_path.endswith(".ipynb"):
        return output
    docs = Path(config["docs_dir"]).resolve().relative_to(ROOT).as_posix()
    branch = (config.get("extra") or {}).get("colab_branch", "main")
    url = colab_url(config.get("repo_url"), branch, f"{docs}/{page.file.src_path}")
    anchor = '<article class="md-content__inner md-typeset">'
    if url is None or anchor not in output:
        return output
    badge = f'<p><a href="{url}"><img src="{COLAB_BADGE}" alt="Open In Colab"></a></p>'
    return output.replace(anchor, anchor + badge, 1)
