import torch

from mnist_mlp.model import MnistMlp

REFERENCE = """MnistMlp(
  (wih): Linear(in_features=784, out_features=200, bias=True)
  (bn1): BatchNorm1d(200, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (dropout1): Dropout(p=0.5, inplace=False)
  (hidden2): Linear(in_features=200, out_features=150, bias=True)
  (bn2): BatchNorm1d(150, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (dropout2): Dropout(p=0.3, inplace=False)
  (hidden3): Linear(in_features=150, out_features=50, bias=True)
  (bn3): BatchNorm1d(50, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (dropout3): Dropout(p=0.2, inplace=False)
  (who): Linear(in_features=50, out_features=10, bias=True)
  (bn4): BatchNorm1d(10, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (activation): ReLU()
)"""


def test_default_model_prints_the_reference_modules():
    # torch 2.14 added ``bias=True`` to BatchNorm's repr; everything else is the reference's text.
    assert str(MnistMlp()).replace("affine=True, bias=True,", "affine=True,") == REFERENCE
    names = [name for name, _ in MnistMlp().named_children()]
    assert names == ["wih", "bn1", "dropout1", "hidden2", "bn2", "dropout2", "hidden3", "bn3",
                     "dropout3", "who", "bn4", "activation"]


def test_parameter_count_matches_the_reference_layers():
    sizes = [784, 200, 150, 50, 10]
    linear = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    batchnorm = sum(2 * b for b in sizes[1:])
    assert sum(p.numel() for p in MnistMlp().parameters()) == linear + batchnorm == 196_030


def test_forward_gives_logits_per_class_and_sizes_are_configurable():
    net = MnistMlp(hidden1=32, hidden2=16, hidden3=8, dropout1=0.1)
    out = net(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert net.wih.out_features == 32 and net.dropout1.p == 0.1


def test_activation_is_not_applied_to_logits():
    net = MnistMlp().eval()
    with torch.no_grad():
        out = net(torch.randn(256, 784))
    assert (out < 0).any(), "bn4 output must reach the loss without a ReLU"
