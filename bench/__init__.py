"""Speed benchmark of mnist-mlp, a client of the package: ``python -m bench`` (``make bench``).

It times, in one process, alternating epoch by epoch after a warm-up, one training epoch plus its
validation of

  (a) the project: ``mnist_mlp.runner.build`` from ``conf/`` (Trainer, DataModule, LightningModule
      with its fused training iteration, default callbacks and progress bar, MLFlowLogger to a
      temporary SQLite store), timed by a callback from one epoch start to the next, so
      checkpointing and logging count;
  (b) a bare PyTorch loop over the same tensors with the same network, optimizer and batch size
      (once per ``--threads`` value); on CUDA also (g), the same step captured once as a CUDA
      graph and replayed, the hardware anchor;
  (c) the usual torchvision path: ``MNIST`` with ``ToTensor`` + ``Normalize`` and a ``DataLoader``;

then the test evaluation (``trainer.test`` and the report files); then the profile of where (a)'s
time goes (one layer of the default configuration added at a time to a bare ``Trainer``, each
step paired with a bare step); and finally the fixed cost of a run as whole processes
(``python -m bench cost`` runs that section alone): ``train.py``, a sweep's second job and
``evaluate.py``, each timed right after the import floor of the stack (a process that only imports
torch, lightning and mlflow), their phases and memory as the runs logged them to MLflow, and the
memory of a 2-job joblib sweep. (b) and (c) run inside (a)'s fit, between its epochs (outside its
clock), which is what makes the three alternate: a load change on a shared machine hits all three
alike.

Modules, one job each: ``common`` (config, clocks), ``loops`` (the bare loops), ``epochs`` (the
alternating epoch timing), ``profile`` (the layer profile), ``process`` (a whole process measured
from outside, its MLflow runs read back), ``cost`` (the fixed-cost rounds and the sweep's
memory), ``cli`` (arguments, printing order, the JSON of the figures).

``python -m bench serve`` (``serve``) times MLflow's scoring server instead, beside in-process
``predict`` and the bare forward pass (docs/serving.md).
"""
