"""The MNIST splits as MLflow dataset inputs: digests that follow the data, and parallel jobs that
race to insert the same dataset row (mnist_mlp/tracking/datasets.py)."""

from __future__ import annotations

import threading

from mlflow import MlflowClient

from mnist_mlp.datamodule import MnistDataModule
from tests.helpers.data import write_synthetic_mnist
from tests.helpers.store import new_store


def test_dataset_digests_follow_the_verified_md5s_and_the_split(tmp_path):
    from mnist_mlp.tracking.datasets import split_inputs

    def digests(seed: int, val_size: int) -> dict[str, str]:
        data = tmp_path / f"d{seed}"
        dm = MnistDataModule(data, val_size=val_size, sources=("local",),
                             md5=write_synthetic_mnist(data, seed=seed))
        return {i.dataset.name: i.dataset.digest for i in split_inputs(dm)}

    base, other_split, other_data = digests(0, 100), digests(0, 50), digests(5, 100)
    assert base == digests(0, 100)
    assert other_split["mnist-test"] == base["mnist-test"]
    assert other_split["mnist-train"] != base["mnist-train"]
    assert all(other_data[k] != base[k] for k in base)


def test_parallel_jobs_logging_the_same_datasets_all_get_them(tmp_path):
    """Jobs of a parallel sweep race to insert one dataset row; the losers must not fail the run.

    Threads stand in for the sweep's processes: the race is in the store's transaction (look the
    dataset up, insert it if missing), which six clients at a barrier lose most of the time.
    """
    from mnist_mlp.tracking.datasets import log_datasets

    data = tmp_path / "data"
    dm = MnistDataModule(data, val_size=100, sources=("local",), md5=write_synthetic_mnist(data))
    uri = new_store(tmp_path)
    experiments = [MlflowClient(uri).create_experiment(f"race-{i}") for i in range(10)]
    start, errors = threading.Barrier(6), []

    def job() -> None:
        client = MlflowClient(uri)
        for run_id in [client.create_run(e).info.run_id for e in experiments]:
            start.wait()
            try:
                log_datasets(client, run_id, dm)
            except Exception as error:  # noqa: BLE001 - reported below, with the others
                errors.append(error)

    jobs = [threading.Thread(target=job) for _ in range(6)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    assert not errors, errors[0]
    client = MlflowClient(uri)
    for experiment in experiments:
        runs = client.search_runs([experiment])
        assert len(runs) == len(jobs)
        for r in runs:
            assert {d.dataset.name for d in r.inputs.dataset_inputs} == {
                "mnist-train", "mnist-validation", "mnist-test"}
