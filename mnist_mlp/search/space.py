"""The search space: Hydra's sweep syntax turned into Optuna distributions, and trials back into overrides.

One form everywhere, Hydra's own sweep syntax, as in ``hydra.sweeper.params`` of
``conf/hparams_search/optuna.yaml`` and as plain overrides on the command line (a command-line
entry replaces the YAML one of the same key; a plain value there fixes the key instead):

* ``interval(a, b)``: a float in [a, b]; ``tag(log, interval(a, b))`` on a log scale;
  ``tag(int, interval(a, b))`` (and ``tag(int, log, ...)``) an integer;
* ``range(start, stop, step)``: ``start, start + step, ...`` below ``stop``, as Python's range;
* ``choice(a, b, ...)``: one of the values; also for config groups (``model/scheduler=choice(none,cosine)``).

Every problem a user can fix is a ``UserError`` naming the key, where it was given and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from mnist_mlp.errors import UserError

PARAMS_KEY = "hydra.sweeper.params"
_TAGS = {"log", "int"}
_HOW = ("Use interval(low, high), tag(log, interval(low, high)), tag(int, interval(low, high)), "
        "range(start, stop, step) or choice(a, b, ...)")


@dataclass(frozen=True)
class Entry:
    """One searched key: its Optuna distribution, the text it was given as, and where."""

    key: str
    distribution: BaseDistribution
    spec: str
    origin: str

    def corners(self) -> list[Any]:
        """The values that bound the range (both ends, every choice): what the config check tries."""
        d = self.distribution
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys (``entries``) and the keys fixed for every trial (``fixed`` overrides)."""

    entries: dict[str, Entry]
    fixed: list[str] = field(default_factory=list)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {k: e.distribution for k, e in self.entries.items()}

    def composed_overrides(self) -> list[list[str]]:
        """Override sets that together name every option of every searched config group once
        (and some value of every other key): what must compose for every trial to compose."""
        groups = {k: e.corners() for k, e in self.entries.items() if "/" in k}
        rounds = max((len(v) for v in groups.values()), default=1)
        return [[override(k, v[min(i, len(v) - 1)] if "/" in k else v[0])
                 for k, v in ((k, e.corners()) for k, e in self.entries.items())]
                for i in range(rounds)]


def _parse(line: str, origin: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as err:
        raise UserError(
            f"{origin} has {line!r}, which Hydra cannot parse ({str(err).splitlines()[0]}). {_HOW}."
        ) from None


def _refuse(key: str, spec: str, origin: str, problem: str, fix: str) -> UserError:
    return UserError(f"The search space's {key}={spec} ({origin}) {problem}: {fix}. Nothing was run "
                     "or recorded.")


def _interval(key: str, spec: str, origin: str, sweep: IntervalSweep) -> BaseDistribution:
    unknown = set(sweep.tags) - _TAGS
    if unknown:
        raise _refuse(key, spec, origin, f"has the tag {sorted(unknown)[0]!r}",
                      "the tags known here are log and int, e.g. tag(log, interval(0.01, 0.3))")
    low, high, log = sweep.start, sweep.end, "log" in sweep.tags
    if not (math.isfinite(low) and math.isfinite(high)):
        raise _refuse(key, spec, origin, "has an end that is not a finite number", "give two numbers")
    if low > high:
        raise _refuse(key, spec, origin, f"has its low end {low:g} above its high end {high:g}",
                      f"write the smaller end first, interval({high:g}, {low:g})")
    if log and low <= 0:
        raise _refuse(key, spec, origin, f"is on a log scale but reaches {low:g}",
                      "a log scale needs both ends > 0: raise the low end (e.g. 1e-6 for "
                      "'practically none') or drop the log tag")
    if "int" in sweep.tags:
        if low != int(low) or high != int(high):
            raise _refuse(key, spec, origin, "is an integer interval with a fractional end",
                          "give whole numbers")
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(low, high, log=log)


def _range(key: str, spec: str, origin: str, override: Override) -> BaseDistribution:
    sweep = override.value()
    values = list(override.sweep_iterator()) if (sweep.step or 0) > 0 and not sweep.shuffle else []
    if not values:
        raise _refuse(key, spec, origin, "is an empty or backward range",
                      "give range(start, stop, step) with start < stop and step > 0")
    if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(values[0], values[-1], step=sweep.step)
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(sweep.step))


def _choice(key: str, spec: str, origin: str, override: Override) -> BaseDistribution:
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if not choices or any(not isinstance(c, str | int | float | bool) for c in choices):
        raise _refuse(key, spec, origin, "has no choices or a choice that is not a plain value",
                      "give choice(a, b, ...) of numbers, words or true/false")
    return CategoricalDistribution(choices)


def _spec(override: Override) -> str:
    """The value as written (``tag(log, interval(0.01, 0.3))``); Hydra renders no sweep as text."""
    return str(override.input_line).split("=", 1)[1].strip()


def distribution(override: Override, origin: str) -> BaseDistribution:
    """The Optuna distribution of one sweep override (``model.lr=tag(log,interval(0.01,0.3))``)."""
    key, spec = override.get_key_element(), _spec(override)
    value = override.value()
    if isinstance(value, IntervalSweep):
        return _interval(key, spec, origin, value)
    if isinstance(value, RangeSweep):
        return _range(key, spec, origin, override)
    if isinstance(value, ChoiceSweep):
        return _choice(key, spec, origin, override)
    raise _refuse(key, spec, origin, "is not a search range", _HOW)


def _lines(params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` as override lines; nested keys (``model: {lr: ...}``) are joined."""
    out: list[str] = []
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            out += [f"{key}.{line}" for line in _lines(value)]
        else:
            out.append(f"{key}={value}")
    return out


def parse(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The space of ``hydra.sweeper.params`` with the command line's sweep overrides over it.

    ``arguments``: the multirun's task overrides; those that are not sweeps stay fixed for every
    trial (and a fixed value for a key of ``params`` removes that key from the space).
    """
    entries: dict[str, Entry] = {}
    given = [(line, f"{PARAMS_KEY} in conf/") for line in _lines(params)]
    given += [(line, "on the command line") for line in arguments]
    fixed: dict[str, str] = {}
    for line, origin in given:
        o = _parse(line, origin)
        key = o.get_key_element()
        if o.is_sweep_override():
            if o.is_delete() or o.is_add() or o.is_force_add():
                raise _refuse(key, _spec(o), origin, "adds or deletes a key",
                              "search keys the config already has, without + or ~")
            entries[key] = Entry(key, distribution(o, origin), _spec(o), origin)
            fixed.pop(key, None)
        else:
            fixed[key] = line
            entries.pop(key, None)
    if not entries:
        raise UserError(
            f"The search space is empty: {PARAMS_KEY} has no ranges and the command line gives "
            f"none. {_HOW} for at least one key, e.g. python train.py -m hparams_search=optuna "
            "'model.lr=tag(log,interval(0.01,0.3))'."
        )
    return SearchSpace(entries, list(fixed.values()))


def override(key: str, value: Any) -> str:
    """``key=value`` that Hydra parses back to exactly ``value`` (floats in full, odd words quoted)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    else:
        text = str(value)
        parsed = _parse(f"{key}={text}", "a trial").value()
        if parsed != text:  # "1e-3", "true", "a b": quote to keep it the string it was
            escaped = text.replace("\\", "\\\\").replace("'", "\\'")
            text = f"'{escaped}'"
    return f"{key}={text}"
