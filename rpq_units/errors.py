"""The project's error classes for problems in the user's input.

Every error the library raises for bad input (a malformed data dir, unreadable audio, a wrong
option value, an inconsistent feature shard, ...) derives from :class:`UserError`; command-line
entry points print such an error as one line (``error: ...``, exit 1). Anything else is a
programming error and keeps its traceback. ``UserError`` is a ``ValueError``, so callers that
catch ``ValueError`` keep working.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input, a bad option value or a missing named file: the user can fix it."""


class OptionError(UserError):
    """An option value outside its allowed range."""


class QuantizerError(UserError):
    """Bad input to a quantizer (shape, dimension, NaN/Inf, too few frames, an option value)."""


# OSErrors that name a path the user gave or a machine condition the user can fix (a missing or
# unreadable input, an output path through a file, a full or read-only disk); any other OSError
# is reported with its traceback
USER_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES,
                         errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT})  # fmt: skip


def is_user_error(e: BaseException) -> bool:
    """True for the project's :class:`UserError` and for OSErrors of :data:`USER_ERRNOS`."""
    return isinstance(e, UserError) or (isinstance(e, OSError) and e.errno in USER_ERRNOS)


def one_line(e: BaseException) -> str:
    """The first line of the error's message (its type when it has none)."""
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__


def exit_status(fn: Callable[[], int | None], what: str = "command") -> int:
    """Run ``fn`` as a command's main part: its status (``None``: 0); a user error
    (:func:`is_user_error`) becomes one ``error: ...`` line on stderr and status 1 (its
    traceback is logged at DEBUG level, naming ``what`` failed); any other exception, a bug,
    propagates with its traceback. The one error-to-exit handler of every entry point."""
    try:
        return fn() or 0
    except (UserError, OSError) as e:
        if not is_user_error(e):  # an OSError that is not about the user's files: a bug
            raise
        logging.getLogger("rpq_units").debug("%s failed", what, exc_info=True)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1


def str2bool(v: str) -> bool:
    """A command-line true/false (also 1/0, yes/no), for ``argparse``'s ``type=``."""
    import argparse

    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")
