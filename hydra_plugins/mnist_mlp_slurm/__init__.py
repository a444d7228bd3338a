"""The project's Slurm launcher where Hydra looks for launchers (the ``hydra_plugins`` namespace).

Hydra instantiates only launchers defined in that namespace; the code is
``mnist_mlp.slurm.launcher`` (``conf/hydra/launcher/submitit_slurm.yaml`` names this class).
"""

from mnist_mlp.slurm import launcher as _launcher


class SlurmLauncher(_launcher.SlurmLauncher):
    """``mnist_mlp.slurm.launcher.SlurmLauncher``, registered as a Hydra plugin."""
