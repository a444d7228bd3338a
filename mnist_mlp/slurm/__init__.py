"""Sweeps on a Slurm cluster through Hydra's submitit launcher (``hydra/launcher=submitit_slurm``).

hydra-submitit-launcher submits one Slurm job per run and submitit runs it there; this package
adds what a sweep of this project needs on a real cluster, one module per job:

* ``launcher``: the launcher (``SlurmLauncher``): checks the request with ``sbatch --test-only``
  before anything is recorded (``LauncherCheck``), waits for every job, and reports each one that
  did not finish (cancelled, failed, timed out, killed) instead of hanging or stopping at the first;
* ``states``: job states read with ``squeue`` where Slurm keeps no accounting (no ``sacct``);
* ``requeue``: a job that Slurm requeues (``scontrol requeue``, preemption, submitit's time-limit
  requeue) resumes from its ``last.ckpt`` and continues its own MLflow run.

See docs/slurm.md for running it on a cluster.
"""
