"""Building the objects a config describes, with errors a user can act on.

``hydra.utils.instantiate`` wraps whatever a target raises in an ``InstantiationException`` whose
text is Hydra's ("Error in call to target ..."), followed by the cause's repr. ``build`` lets a
``UserError`` of the target through as it is, and turns any other failure into a one-paragraph
``UserError`` naming the config key, so ``train.py`` never shows a traceback for a setting.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from mnist_mlp.errors import UserError


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; ``key`` is where ``node`` sits in the config (``model``)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        target = node.get("_target_", "its target") if hasattr(node, "get") else "its target"
        detail = (f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause is not None
                  else str(err).splitlines()[0])
        raise UserError(
            f"The settings under {key} cannot build {target} ({detail}). Check the keys and values "
            f"under {key} (in conf/ or on the command line) and run again."
        ) from None
