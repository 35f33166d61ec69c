"""Command-line parsing rules the CLI adds to Typer's: a flag never takes a value.

`predict --fast true "good"` would otherwise turn on --fast and classify the word "true" as a text.
"""

from __future__ import annotations

import typer
from typer.core import TyperCommand

BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


class FlagsTakeNoValue(TyperCommand):
    """A command that refuses `--flag true` (or false, yes, no, ...) with a usage error saying how to write it."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        flags = {name for p in self.params if getattr(p, "is_flag", False) for name in (*p.opts, *p.secondary_opts)}
        for flag, following in zip(args, args[1:], strict=False):
            if flag == "--":
                break
            if flag in flags and following.lower() in BOOL_WORDS:
                raise typer.BadParameter(f"{flag} is a flag and takes no value: write {flag} to turn it on, leave "
                                         f"it out to leave it off (to pass the text {following!r}, put it after --)",
                                         ctx=ctx, param_hint=flag)
        return super().parse_args(ctx, args)
