"""The Optuna study in its RDB storage: opened by the sweeper (create or resume) and by each trial's job.

One storage URL for both sides (``hydra.sweeper.storage``): a SQLite file beside the MLflow store by
default, a PostgreSQL (or MySQL) database that every machine reaches for a search spread over
several. The URL is recorded in every trial's params and config, so it must not hold a password:
PostgreSQL clients read it from ``PGPASSWORD`` or ``~/.pgpass`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_mlp.errors import UserError

STORAGE_KEY = "hydra.sweeper.storage"
#: User attribute of a trial whose job stopped it early (the epoch): the sweeper tells it PRUNED.
PRUNED_ATTR = "pruned_at_epoch"
#: SQLite waits this long for a lock held by a trial writing beside it, instead of failing.
_SQLITE_TIMEOUT_S = 60


def _url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        raise UserError(
            f"{STORAGE_KEY}={url} is not a database URL: give sqlite:///<absolute path>.db or "
            "postgresql://<user>@<host>:<port>/<database>."
        ) from None


def check_url(url: str) -> None:
    """A database URL without a password (it would be recorded in every trial's params)."""
    parsed = _url(url)
    if parsed.password:
        raise UserError(
            f"{STORAGE_KEY} holds a password, which would be recorded in every trial's params and "
            "config.yaml: give the URL without it (postgresql://<user>@<host>:<port>/<database>) "
            "and set PGPASSWORD in the environment (or use ~/.pgpass) instead."
        )


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url``; a SQLite file's folder is created. UserError if unusable."""
    check_url(url)
    parsed = _url(url)
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
    try:
        return _rdb_storage(url, engine)
    except ImportError:
        raise UserError(
            f"{STORAGE_KEY}={url}: SQLAlchemy has no driver for it installed. For PostgreSQL "
            "write postgresql+psycopg2://<user>@<host>:<port>/<database> (psycopg2-binary), or "
            "install the driver the URL names; nothing was run or recorded."
        ) from None
    except Exception as err:  # noqa: BLE001  (SQLAlchemy raises per driver; any means: unusable)
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise UserError(
            f"{STORAGE_KEY}={url} cannot be used ({type(err).__name__}: {first}). Start the "
            "database or point the storage at a reachable one (the default is a SQLite file "
            "beside the MLflow store); nothing was run or recorded."
        ) from None


def _rdb_storage(url: str, engine: dict[str, Any], tries: int = 3) -> Any:
    """``RDBStorage``, tried again when a search started beside this one on a fresh database was
    creating Optuna's tables at the same moment (PostgreSQL then refuses one of the two)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == tries - 1:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def check_resumable(storage: Any, study_name: str, direction: str,
                    distributions: Mapping[str, Any]) -> None:
    """An existing study of that name can take this search's trials: same direction, and every
    searched key of the same kind (and, for a choice, the same choices) as the study searched.

    Optuna lets a number's range change between trials but raises deep inside ``ask`` for a
    choice whose options changed ("does not support dynamic value space").
    """
    from optuna.distributions import check_distribution_compatibility

    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return  # a new study
    where = f"hydra.sweeper.study_name={study_name} (in {STORAGE_KEY})"
    existing = storage.get_study_directions(study_id)[0].name.lower()
    if existing != direction:
        raise UserError(
            f"{where} is a study that {existing}s, but this search would {direction}: resume it "
            "with the same optimized_metric and direction, or start a new study (another "
            "study_name)."
        )
    searched: dict[str, Any] = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        searched.update(trial.distributions)
    for key, new in distributions.items():
        if key not in searched:
            continue
        try:
            check_distribution_compatibility(searched[key], new)
        except ValueError:
            raise UserError(
                f"{where} searched {key} as {searched[key]}, which this search's {key} "
                f"({new}) cannot continue: keep the study's choices for {key} (numbers may take "
                "another range), or start a new study (another study_name)."
            ) from None


def trial_of(storage: Any, study_name: str, number: int, pruner: Any) -> Any:
    """The running trial ``number`` of ``study_name``, as the ``optuna.Trial`` its job reports to.

    ``optuna.Trial(study, trial_id)`` is what ``Study.ask`` itself builds; Optuna's docs advise
    against calling it directly only because ``optimize`` normally does. A sampler that samples
    nothing (the sweeper asked for the parameters) keeps the job from fitting the sampler's model.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.Trial(study, trial_id)
