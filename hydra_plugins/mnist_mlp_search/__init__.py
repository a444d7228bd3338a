"""mnist-mlp's Hydra plugins: Hydra 1.3 instantiates plugins only from the ``hydra_plugins`` package."""
