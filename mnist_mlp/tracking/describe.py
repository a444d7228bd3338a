"""The run's description (tag ``mlflow.note.content``, Markdown): its headline in the MLflow UI.

Every number is read from where it is computed: the logged ``test/...`` metrics, ``TestResults``
(``mnist_mlp.metrics``) and the report's ``most_confused`` and ``train_hyperparameters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mnist_mlp import report

NOTE_TAG = "mlflow.note.content"


def _with_interval(metrics: Mapping[str, float], key: str) -> str:
    """``0.9812`` or, where the test metrics hold its interval, ``0.9812 [0.9785, 0.9838]``."""
    text = f"{metrics[key]:.4f}"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if low is not None and high is not None:
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def _confusion_line(results: Any) -> str:
    pairs = report.most_confused(results, top=1)
    if not pairs:
        return "No test image misclassified."
    a, b, ab, ba = pairs[0]
    return f"Most confused: {a}↔{b}, {ab + ba} images ({a}→{b}: {ab}, {b}→{a}: {ba})."


def headline(metrics: Mapping[str, float], results: Any | None,
             hyperparameters: Mapping[str, Any]) -> str:
    """Test accuracy and macro F1 (with their intervals where logged), the most-confused pair, the
    key hyperparameters; without test results, the hyperparameters alone."""
    lines = []
    if "test/acc" in metrics:
        line = f"**Test accuracy {_with_interval(metrics, 'test/acc')}**"
        if "test/f1_macro" in metrics:
            line += f", macro F1 {_with_interval(metrics, 'test/f1_macro')}"
        if results is not None:
            line += f" ({results.correct}/{results.total} test images correct)"
        lines.append(line + ".")
    if results is not None:
        lines.append(_confusion_line(results))
    lines.append(", ".join(f"{k} {v}" for k, v in hyperparameters.items()) + ".")
    return "\n\n".join(lines)


def describe_run(client: Any, run_id: str, cfg: Mapping[str, Any], metrics: Mapping[str, Any],
                 results: Any | None) -> None:
    """Set the run's description from its test metrics and results."""
    values = {k: float(v) for k, v in metrics.items()}
    client.set_tag(run_id, NOTE_TAG, headline(values, results, report.train_hyperparameters(cfg)))
