"""Config mistakes and choices: a key the model does not take is named with the ones it takes; an
optimizer option brings its own learning rate, which every override form still changes."""

from __future__ import annotations

import pytest
import torch
from faults_helpers import compose_job

from mnist_mlp import config
from mnist_mlp.errors import UserError


def test_an_unknown_model_key_is_one_paragraph_naming_it_and_the_valid_keys():
    cfg = compose_job("+model.lrr=0.1")  # Hydra's own advice for a key it does not know
    with pytest.raises(UserError) as caught:
        config.build(cfg.model, "model", _convert_="all")
    message = str(caught.value)
    assert "\n" not in message
    assert "model.lrr is not a setting of mnist_mlp.module.MnistLitModule" in message
    assert "Did you mean model.lr?" in message and "model.lr=0.1" in message
    assert "net, optimizer, lr, scheduler" in message  # what it takes, in its order
    assert "TypeError" not in message and "unexpected keyword" not in message


@pytest.mark.parametrize(("overrides", "kind", "lr"), [
    ((), torch.optim.SGD, 0.1),  # the reference
    (("model/optimizer=adam",), torch.optim.Adam, 0.001),  # Adam's own rate, not SGD's 0.1
    (("model/optimizer=adam", "model.lr=0.01"), torch.optim.Adam, 0.01),
    (("model.lr=0.05",), torch.optim.SGD, 0.05),
    (("model/optimizer=sgd", "model.optimizer.momentum=0"), torch.optim.SGD, 0.1),
])
def test_each_optimizer_option_sets_its_learning_rate_and_overrides_win(overrides, kind, lr):
    cfg = compose_job(*overrides)
    module = config.build(cfg.model, "model", _convert_="all")
    optimizer = module.configure_optimizers()
    assert type(optimizer) is kind
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert cfg.model.lr == pytest.approx(lr)
