"""The one error type of the host side: ``LabError`` and what the CLI does with it.

Every expected failure (a bad option, wrk missing, the lab not up, a target
that fails) is raised as a ``LabError`` (or ``lab.routing.RenderError``,
the stdlib renderer's own), whose message says what went wrong and what to do.
``lab.cli`` turns either into one ``lab:`` line on stderr and ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LabError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do."""

    exit_code: int = 1


class UsageError(LabError):
    """A bad argument or option: nothing was changed."""

    exit_code = 2
