"""User errors: what the ``seal`` command reports as one readable paragraph instead of a traceback.

A user error is a problem with something the user gave (a data file, a record, an option value, a
run directory, a model name) that the user can fix. Every such error class derives from
:class:`UserError`; the CLI prints its message (what is wrong, where, and what to do), and exits
with status 2. Anything else is a program error and keeps its traceback. ``--debug`` on the
command line, or ``SEAL_DEBUG=1`` in the environment, shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import traceback

DEBUG_ENV = "SEAL_DEBUG"
USER_ERROR_EXIT = 2


USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
"""OS errors that mean a path the user gave is wrong (missing, a file where a directory belongs, ...)."""


class UserError(Exception):
    """A problem with the user's input; its message names the file, record or option at fault."""


class OptionError(UserError, ValueError):
    """A config or command-line value that cannot be used; the message names the option."""


def check_choice(value: str, option: str, allowed: tuple[str, ...], error: type[OptionError] = OptionError) -> None:
    """Refuse a value outside ``allowed`` with ``error`` (an :class:`OptionError` kind), naming
    ``option`` and what it accepts."""
    if value not in allowed:
        raise error(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


class EmptySelectionError(UserError, ValueError):
    """A data selection (path, start, limit) that selects no item."""


def debug_requested(argv: list[str], env=None) -> tuple[bool, list[str]]:
    """Whether tracebacks are wanted (``--debug`` or ``$SEAL_DEBUG``), and ``argv`` without ``--debug``."""
    env = os.environ if env is None else env
    wanted = "--debug" in argv or env.get(DEBUG_ENV, "") not in ("", "0", "false", "False")
    return wanted, [arg for arg in argv if arg != "--debug"]


def user_error_cause(error: BaseException) -> BaseException | None:
    """The user error behind ``error``: itself, or one in its ``raise ... from`` chain.

    Only explicit causes are followed: an error raised while *handling* a missing file (its
    ``__context__``) is a program error, not the user's.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, UserError | FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
        ):
            return current
        current = current.__cause__
    return None


def describe(error: BaseException) -> str:
    """One paragraph for a user error (an OS error gets its file named and a hint)."""
    if isinstance(error, OSError) and not isinstance(error, UserError):
        where = f" {error.filename}" if error.filename else ""
        reason = error.strerror or str(error)
        hints = {
            FileNotFoundError: "check the path (relative paths start from the current directory)",
            PermissionError: "check the permissions, or choose another --run_dir",
            IsADirectoryError: "a file was expected there, not a directory",
            NotADirectoryError: "a directory was expected there (is --run_dir an existing file?)",
            FileExistsError: "a file is in the way of a directory (is --run_dir an existing file?)",
        }
        hint = next((text for kind, text in hints.items() if isinstance(error, kind)), "")
        message = f"cannot use{where}: {reason}" + (f"; {hint}" if hint else "")
    else:
        message = str(error).strip() or type(error).__name__
    return textwrap.fill(" ".join(message.split()), width=100)


STRUCTURAL = re.compile(
    r"^\s*(- )?(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Problem with given class_path|"
    r"Given value|Expected a <class 'NoneType'>)"
)
PARSER_KEY = re.compile(r'^(\s*)(?:- )?Parser key "([^"]+)":\s*(.*)$')


def describe_parse_error(message: str) -> str:
    """The command-line/config parser's nested message as one line: the option and why.

    The parser explains a bad value through every union it tried (``model`` -> its class ->
    ``inner`` -> ``lr``); what the user needs is the innermost key path and its reason.
    """
    lines = message.splitlines()
    chain: list[tuple[int, str]] = []
    best: tuple[list[str], str] | None = None
    for index, line in enumerate(lines):
        match = PARSER_KEY.match(line)
        if not match:
            continue
        depth = len(match.group(1))
        chain = [(d, key) for d, key in chain if d < depth] + [(depth, match.group(2))]
        reason = match.group(3).strip()
        for following in lines[index + 1 :]:
            if reason:
                break
            if following.strip() and not STRUCTURAL.match(following) and not PARSER_KEY.match(following):
                reason = following.strip()
        if reason and (best is None or len(chain) >= len(best[0])):
            best = ([key for _, key in chain], reason)
    if best is None:
        return " ".join(message.split())
    keys, reason = best
    return f"option {'.'.join(keys)}: {reason.removeprefix('- ')}"


def run_reporting_user_errors(entry, argv: list[str], env=None) -> object:
    """Run ``entry(argv)``; a user error becomes ``seal: error: <paragraph>`` on stderr and exit 2."""
    debug, argv = debug_requested(argv, env)
    try:
        return entry(argv)
    except argparse.ArgumentError as error:  # a bad option or config value (the parser's exit_on_error is off)
        if debug:
            traceback.print_exception(error)
        command = next((arg for arg in argv if not arg.startswith("-")), "")
        print(
            f"seal: error: {describe_parse_error(str(error))} (seal {command} --help lists every option and what "
            "it accepts)",
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR_EXIT) from None
    except Exception as error:
        cause = user_error_cause(error)
        if cause is None:
            raise
        if debug:
            traceback.print_exception(error)
        print(f"seal: error: {describe(cause)}", file=sys.stderr)
        if not debug:
            print(f"(run again with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
