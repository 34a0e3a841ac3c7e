"""``.. cli-reference::``: the command line's reference, generated from its argparse parser.

The directive walks :func:`dask_streamkm.cli.build_parser` (every subcommand, positional
argument and option, with its default and help text) and writes one section per subcommand,
so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import textwrap

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _invocation(action):
    if not action.option_strings:
        return action.metavar or action.dest.upper()
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    return ", ".join(f"{flag} {metavar}" for flag in action.option_strings)


def _describe(action):
    text = (action.help or "").replace("%%", "%")
    facts = []
    if action.choices is not None and not isinstance(action.choices, dict):
        facts.append("one of " + ", ".join(f"``{c}``" for c in action.choices))
    if action.required and action.option_strings:
        facts.append("required")
    default = action.default
    if (
        action.option_strings
        and action.nargs != 0
        and default not in (None, argparse.SUPPRESS)
        and "default" not in text
    ):
        facts.append(f"default ``{default}``")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        facts.append("repeatable")
    if facts:
        text = f"{text} ({'; '.join(facts)})" if text else "; ".join(facts).capitalize()
    return text or "(no help text)"


def _escape(text):
    return text.replace("*", r"\*").replace("`", r"\`") if "``" not in text else text


def parser_lines(parser):
    """reST lines for every subcommand of ``parser``."""
    lines = []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for name, subparser in sub.choices.items():
        title = f"``{parser.prog} {name}``"
        lines += [title, "~" * len(title), "", _escape(helps.get(name) or ""), ""]
        usage = subparser.format_usage().strip().removeprefix("usage: ")
        wrapped = textwrap.wrap(" ".join(usage.split()), width=64, subsequent_indent="    ")
        lines += [".. code-block:: text", ""] + ["   " + line for line in wrapped] + [""]
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            lines += [f"``{_invocation(action)}``", f"   {_escape(_describe(action))}", ""]
    return lines


class CliReference(SphinxDirective):
    has_content = False

    def run(self):
        from dask_streamkm.cli import build_parser

        lines = parser_lines(build_parser())
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source="dask_streamkm/cli.py"), container
        )
        return container.children


def setup(app):
    app.add_directive("cli-reference", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
