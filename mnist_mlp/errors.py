"""One exception for everything a user can fix, and the one way an entry point reports it.

Every command (``train.py``, ``evaluate.py``, ``compare.py``, a sweep's callbacks, ``python -m
mnist_mlp.fetch``, ``python -m mnist_mlp.tracking.sync``) turns a ``UserError`` into the same
paragraph and exit status through ``exit_on_user_error``, so a user never meets a traceback for
something they can fix, and scripts can tell such a refusal (2) from a crash (1).
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator

#: Exit status of a command that refused its input (a ``UserError``).
USER_ERROR_EXIT = 2
#: The errors of a full disk (or quota): the user's to fix.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """A problem the user can fix: the message names the file or key and says what to do."""


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Inside the block, a ``UserError`` becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)


def no_space(error: BaseException) -> OSError | None:
    """The "no space left" ``OSError`` behind ``error``, if any.

    ``torch.save`` reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc]
    ... unexpected pos``, raised while the file's ``OSError`` was being handled: the cause is then
    the error's context, not ``error`` itself.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None
