"""Building the objects a config describes, with errors a user can act on.

``hydra.utils.instantiate`` wraps whatever a target raises in an ``InstantiationException`` whose
text is Hydra's ("Error in call to target ..."), followed by the cause's repr. ``build`` lets a
``UserError`` of the target through as it is, and turns any other failure into a one-paragraph
``UserError`` naming the config key, so ``train.py`` never shows a traceback for a setting. A key
the target does not take (``+model.lrr=0.1``, Hydra's own advice for a key it does not know) is
named with the keys the target does take.
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate

from mnist_mlp.errors import UserError

# Python's wording for a keyword a callable does not take (CPython 3.11).
_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; ``key`` is where ``node`` sits in the config (``model``)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        raise _explained(cause, node, key, str(err).splitlines()[0]) from None


def call(partial: Any, node: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """``partial(*args, **kwargs)`` for a ``_partial_: true`` node that ``build`` made: its keys
    reach the target only now (``model.optimizer`` gets the parameters inside ``fit``), so a key
    it does not take fails here, and is explained as ``build`` explains it."""
    try:
        return partial(*args, **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the target raises for a setting
        raise _explained(err, node, key) from None


def _explained(cause: BaseException | None, node: Any, key: str, fallback: str = "") -> UserError:
    if isinstance(cause, UserError):
        return cause
    target = node.get("_target_", "its target") if hasattr(node, "get") else "its target"
    unknown = _UNEXPECTED.search(str(cause)) if isinstance(cause, TypeError) else None
    if unknown:
        return unknown_key(key, unknown.group(1), target, node.get(unknown.group(1)))
    detail = (f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause is not None
              else fallback)
    return UserError(
        f"The settings under {key} cannot build {target} ({detail}). Check the keys and values "
        f"under {key} (in conf/ or on the command line) and run again."
    )


def unknown_key(key: str, name: str, target: str, value: Any = None) -> UserError:
    """``key.name`` is not an argument of ``target``: the paragraph that lists the ones it takes."""
    valid = accepted_keys(target)
    listed = f", which takes {', '.join(valid)}" if valid else ""
    close = difflib.get_close_matches(name, valid, n=1)
    meant = f" Did you mean {key}.{close[0]}?" if close else ""
    fix = f", e.g. {key}.{close[0]}={value}" if close and value is not None else ""
    return UserError(
        f"{key}.{name} is not a setting of {target}{listed}.{meant} Remove {key}.{name} (a leading "
        f"+ adds a key that conf/ does not have) or correct its spelling{fix}, and run again."
    )


def accepted_keys(target: str) -> list[str]:
    """The keyword arguments ``target`` (a class or function path) takes, in its order."""
    try:
        params = inspect.signature(get_object(target)).parameters.values()
    except (ImportError, ValueError, TypeError, AttributeError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self"]


def hydra_config() -> Any | None:
    """Hydra's runtime config, or None outside a Hydra app (tests, the benchmark)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None
