"""Command-line helpers shared by every ``python -m`` entry point of the project.

Public for ``theory_sims`` and ``real_data`` too: a config field declared with :func:`param`
carries its ``--help`` text, :func:`add_config_flags` turns a frozen dataclass into flags,
:class:`Parser` reports a bad flag in one line with exit status 2, and :func:`fail` does the same
for errors found after parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys


def param(help_text: str, default):
    """A dataclass field with its ``--help`` text in the metadata (read by ``add_config_flags``)."""
    return dataclasses.field(default=default, metadata={"help": help_text})


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        # argparse reads "-1" as a value but "-1,0" or "-1e3" as an unknown flag, so
        # "--data-seeds -1,0" would fail with "expected one argument" instead of the flag's own
        # range check. No flag of ours starts with "-<digit>", so anything of that form is a value.
        self._negative_number_matcher = re.compile(r"^-\.?\d[\w.,+-]*$")

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_config_flags(group, config_cls, skip: tuple[str, ...] = (), defaults=None) -> list[str]:
    """Add one ``--flag`` per field of the frozen dataclass ``config_cls``.

    The help text is the field's ``metadata["help"]``; the default shown is the value in
    ``defaults`` (an instance: what the command really runs with) or else the dataclass's own,
    but the parsed default is ``None`` so the caller can tell which flags were given. Returns the
    field names added.
    """
    names = []
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        shown = getattr(defaults, f.name) if defaults is not None else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {shown})"
        if isinstance(f.default, bool):
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                help=help_text,
            )
        else:
            kind = type(f.default)
            group.add_argument(
                flag, dest=f.name, type=kind, default=None, metavar=kind.__name__.upper(),
                help=help_text,
            )
        names.append(f.name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict:
    """The subset of ``names`` the user set on the command line (parsed value is not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def refuse_inert(args: argparse.Namespace, config, rules) -> None:
    """Raise ValueError for the first flag the user gave that would do nothing in ``config``.

    ``rules`` holds ``(flag, dest, acts, when)``: the flag as typed, its argparse dest, a predicate
    on the config that is true where the flag acts, and the words for the mode it needs (``"unless
    --stop converge"``). A flag that would be ignored is refused, never silently dropped.
    """
    for flag, dest, acts, when in rules:
        if getattr(args, dest, None) is not None and not acts(config):
            raise ValueError(f"{flag} does nothing {when}; drop it or change that")


def fail(prog: str, message: str) -> None:
    """Print ``prog: error: message`` and exit with status 2 (for errors found after parsing)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def require_cuda(device: str) -> None:
    """For ``--device cuda``: raise ValueError when torch sees no CUDA device (torch imported lazily,
    so the data package never needs it)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch reports no CUDA device on this machine")


# A bound made of other fields: "must be >= k * views = 800" (the expression up to its value).
_FIELD_BOUND = re.compile(r"^(be (?:>=|<=|>|<) )([A-Za-z_][\w\s*+()-]*?)( = )")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def as_flag(message: str, prefix: str = "", names=None) -> str:
    """A config error as the command line's: a leading ``"lr must ..."`` becomes ``"--kd-lr must ..."``
    with ``prefix="kd-"``; a field that already starts with the prefix keeps it once (``kd_weight``
    is ``--kd-weight``). With ``names`` only those field names are rewritten; other messages are
    returned as they are.

    A bound made of other fields names their flags too, and the value got is the flag's:
    ``"d must be >= k * views = 800 ..., got d=640"`` becomes ``"--d must be >= --k x --views = 800
    ..., got --d 640"`` (only where every field of the bound is one of ``names``; other messages keep
    their ``got field=value``)."""
    head, sep, rest = message.partition(" must ")
    if not sep or not head.isidentifier() or (names is not None and head not in names):
        return message

    def flag(field: str) -> str:
        name = field.replace("_", "-")
        return f"--{name if name.startswith(prefix) else prefix + name}"

    bound = _FIELD_BOUND.match(rest)
    if bound is not None:
        fields = _IDENTIFIER.findall(bound.group(2))
        if names is None or all(f in names for f in fields):
            expr = _IDENTIFIER.sub(lambda m: flag(m.group()), bound.group(2)).replace(" * ", " x ")
            rest = bound.group(1) + expr + bound.group(3) + rest[bound.end():]
            rest = re.sub(rf"\bgot {re.escape(head)}=", f"got {flag(head)} ", rest)
    return f"{flag(head)} must {rest}"


def progress_bars(quiet: bool = False) -> bool:
    """Whether to draw progress bars: not with ``--quiet``, and only when stderr is a terminal (a
    redirected log gets the plain lines instead of carriage returns)."""
    return not quiet and sys.stderr.isatty()
