"""The eager fused step: K optimizer steps per Lightning iteration, totals summed on the device."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import Metric

#: ``model.steps_per_iteration: auto`` per device type: the smallest K from which the cost of a step
#: stops falling on either device (``python -m bench``; figures on the docs' Performance page). A larger K
#: only delays what happens between iterations (the NaN check, a signal's stop, the progress bar).
AUTO_STEPS = {"cpu": 10, "cuda": 10}


def resolve_steps(value: int | str, device: torch.device) -> int:
    """K for ``value`` (an integer >= 1 or ``auto``) on ``device``."""
    if value == "auto":
        return AUTO_STEPS.get(device.type, 1)
    steps = int(value)
    if steps < 1:
        raise ValueError(f"steps_per_iteration must be >= 1 or 'auto', got {value!r}")
    return steps


class TrainTotals(Metric):
    """Epoch totals of the training loss and accuracy, updated once per epoch, summed over ranks.

    ``loss/train`` = loss sum / samples (the per-sample mean, as ``MeanMetric`` weighted by batch
    size gives) and ``acc/train`` = correct / samples (``MulticlassAccuracy(average="micro")``).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("loss_sum", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        self.loss_sum += loss_sum.to(self.loss_sum)
        self.correct += correct.to(self.correct)
        self.count += count

    def compute(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss_sum / self.count, "acc": self.correct.float() / self.count}


#: The hooks Lightning's ``manual_backward`` and ``LightningOptimizer.step`` call on every callback.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def direct_blocker(module: Any) -> str | None:
    """Why each step must go through Lightning's ``manual_backward`` and optimizer wrapper, or None.

    Those calls dispatch three hooks over every callback per step, a cost of its own beside this
    MLP's small step. Where nothing listens to them and neither the strategy (DDP's reducer is
    armed in ``manual_backward``) nor the precision plugin (AMP scaling) acts in them, the step
    calls ``backward`` and the optimizer's ``step`` itself, with the same arithmetic.
    """
    from lightning.pytorch import LightningModule
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy
    from lightning.pytorch.utilities.model_helpers import is_overridden

    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return f"strategy {type(trainer.strategy).__name__}"
    if type(trainer.precision_plugin) is not Precision:
        return f"precision {trainer.precision}"
    for hook in STEP_HOOKS:
        listeners = [c for c in trainer.callbacks if is_overridden(hook, c, Callback)]
        if listeners or is_overridden(hook, module, LightningModule):
            return f"{hook} is implemented by {type((listeners or [module])[0]).__name__}"
    return None


class EagerStep:
    """One optimizer step per call.

    Through Lightning's manual-optimization API (``manual_backward``, the ``LightningOptimizer``)
    where a strategy, precision plugin or hook needs it; directly otherwise (``direct_blocker``).
    Lightning's optimizer-step counter (``trainer.global_step``) counts either way.
    """

    kind = "eager"
    holds_graph = False  # no captured graph writes into the gradients (module.py reads it)

    def __init__(self, module: Any, count_correct: bool) -> None:
        self.module = module
        self.optimizer = module.optimizers()
        self.direct_why = direct_blocker(module)  # None: the step runs directly
        self.direct = self.direct_why is None
        configs = module.trainer.lr_scheduler_configs
        self.step_schedulers = [c for c in configs if c.interval == "step"
                                and not isinstance(c.scheduler, ReduceLROnPlateau)]
        self.clip = (module.hparams.get("gradient_clip_val"),
                     module.hparams.get("gradient_clip_algorithm") or "norm")
        self.count_correct = count_correct
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=module.device)
        self.correct = torch.zeros((), dtype=torch.long, device=module.device)
        self.reset()

    def reset(self) -> None:
        """Starts the epoch's totals (in place: a captured graph keeps adding to the same memory)."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        self.epoch_steps = 0
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def iteration_loss(self, steps: int) -> torch.Tensor:
        """The summed loss of the last ``steps`` steps: non-finite when one of them was."""
        return torch.stack(self.losses[-steps:]).sum()

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The epoch's loss sum (added up once, here), correct count and sample count.

        The loss in float64 and in step order (``cumsum``, sequential on the CPU): the order in
        which ``GraphStep`` adds each step's loss, so both paths give the same bits.
        """
        if self.losses:
            sizes = torch.tensor(self.sizes, dtype=torch.float64, device=self.loss_sum.device)
            self.loss_sum.copy_((torch.stack(self.losses).double() * sizes).cumsum(0)[-1])
        return self.loss_sum, self.correct, self.count

    def begin_iteration(self) -> None:
        """Called before each iteration's steps, after the callbacks ran (nothing to do here)."""

    def release(self) -> None:
        """Drops what the step holds on the device beyond the fit (nothing, here)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        module, optimizer = self.module, self.optimizer
        logits = module(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()  # to None, as Lightning's automatic optimization does
        if self.direct:
            loss.backward()
        else:
            module.manual_backward(loss)
        if self.clip[0]:
            module.clip_gradients(optimizer, gradient_clip_val=self.clip[0],
                                  gradient_clip_algorithm=self.clip[1])
        if self.direct:
            optimizer._on_before_step()  # Lightning's optimizer-step counter (global_step)
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            optimizer.step()
        self._after_step(logits.detach(), loss.detach(), y)

    def _after_step(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.epoch_steps += 1
        for config in self.step_schedulers:  # as Lightning's automatic optimization steps them
            if self.epoch_steps % config.frequency == 0:
                self.module.lr_scheduler_step(config.scheduler, None)
        self._accumulate(logits, loss, y)

    def _accumulate(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss)
        self.sizes.append(len(y))
        self._add_correct(logits, y)
        self.count += len(y)

    def _add_correct(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """The step's correct count onto the epoch's, on the device. Counted now: keeping each
        step's predictions and labels for the epoch's end left small long-lived blocks between
        the freed chunks of the CPU heap, which then grew by about a chunk per iteration."""
        if self.count_correct:
            self.correct.add_((logits.argmax(dim=1) == y).sum())
