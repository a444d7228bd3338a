"""A run's headline in a few lines: what the MLflow run's description says (and a console can).

Every number is read from where it is computed: the logged ``test/...`` metrics, ``TestResults``
(``mnist_mlp.metrics``) and the report's ``most_confused`` and ``train_hyperparameters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mnist_mlp.metrics import TestResults
from mnist_mlp.report.content import joined
from mnist_mlp.report.numbers import most_confused, tied_first


def with_interval(metrics: Mapping[str, float], key: str) -> str:
    """``0.9812`` or, where the test metrics hold its interval, ``0.9812 [0.9785, 0.9838]``."""
    text = f"{metrics[key]:.4f}"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if low is not None and high is not None:
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def confusion_line(results: TestResults) -> str:
    """The most-confused pair, or every pair tied for it."""
    pairs = tied_first(most_confused(results, top=1))
    if not pairs:
        return "No test image misclassified."
    names = joined([f"{a}↔{b}" for a, b, _, _ in pairs])
    counts = "; ".join(f"{a}→{b}: {ab}, {b}→{a}: {ba}" for a, b, ab, ba in pairs)
    each = " each" if len(pairs) > 1 else ""
    return f"Most confused: {names}, {pairs[0][2] + pairs[0][3]} images{each} ({counts})."


def headline(metrics: Mapping[str, float], results: TestResults | None,
             hyperparameters: Mapping[str, Any]) -> str:
    """Test accuracy and macro F1 (with their intervals where logged), the most-confused pair, the
    key hyperparameters; without test results, the hyperparameters alone (Markdown)."""
    lines = []
    if "test/acc" in metrics:
        line = f"**Test accuracy {with_interval(metrics, 'test/acc')}**"
        if "test/f1_macro" in metrics:
            line += f", macro F1 {with_interval(metrics, 'test/f1_macro')}"
        if results is not None:
            line += f" ({results.correct}/{results.total} test images correct)"
        lines.append(line + ".")
    if results is not None:
        lines.append(confusion_line(results))
    lines.append(", ".join(f"{k} {v}" for k, v in hyperparameters.items()) + ".")
    return "\n\n".join(lines)


def headline_numbers(metrics: Mapping[str, float]) -> str:
    """``accuracy 0.9812 [0.9785, 0.9838] (95% interval), macro F1 0.9811, loss 0.0611``: the
    headline numbers on one line (a command's summary), from the logged ``test/...`` metrics."""
    parts = [f"accuracy {with_interval(metrics, 'test/acc')}"
             + (" (95% interval)" if "test/acc_ci_low" in metrics else "")]
    if "test/f1_macro" in metrics:
        parts.append(f"macro F1 {with_interval(metrics, 'test/f1_macro')}")
    if "test/loss" in metrics:
        parts.append(f"loss {metrics['test/loss']:.4f}")
    return ", ".join(parts)
