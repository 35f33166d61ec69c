"""Scoring a classifier: the loss training minimises (weighted per class when asked), its loss and predictions
over a loader, and the metrics they give.

Used by training (validation every epoch, the test split once) and by `evaluate`. torch is imported where
it is used: the ONNX backend scores exports with `classification_metrics` in an install without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentiment_rnn.config import TrainConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.runtime import flat_heap


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: truth)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": label_names,
        "n": len(y_true),
    }


def to_device(batch, device):
    """A loader's (input_ids [T, B], lengths [B], labels [B]) on the device."""
    overlap = device.type == "cuda"  # pinned host memory lets the copy overlap compute
    return tuple(t.to(device, non_blocking=overlap) for t in batch)


def predict_batches(model, loader, device) -> dict:
    """Loss, predictions and probabilities over a loader, in the loader's order."""
    import torch

    model.eval()
    total_loss, preds, labels, probs = 0.0, [], [], []
    with torch.no_grad(), flat_heap():  # a held-out split may have hundreds of thousands of rows
        for batch in loader:
            input_ids, lengths, y = to_device(batch, device)
            logits = model(input_ids, lengths).float()  # [B, C]
            total_loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            probs.append(logits.softmax(-1).cpu())
            preds.append(logits.argmax(-1).cpu())
            labels.append(y.cpu())
    y_true, y_pred = torch.cat(labels), torch.cat(preds)
    return {"loss": total_loss / max(1, len(y_true)), "accuracy": (y_true == y_pred).float().mean().item(),
            "y_true": y_true.tolist(), "y_pred": y_pred.tolist(), "probs": torch.cat(probs)}


def class_weights(cfg: TrainConfig, splits) -> list[float] | None:
    """The loss's weight per class, in label order: train.class_weights as given (one per class), or
    "balanced" computed on the training split as n_samples / (n_classes * count_c) (scikit-learn's
    definition), so each class adds the same total weight to the loss whatever its share of the rows."""
    weights, names = cfg.class_weights, splits.label_names
    if isinstance(weights, list) and len(weights) != len(names):
        raise SentimentRNNError(f"train.class_weights has {len(weights)} weights but the data has {len(names)} "
                                f"classes ({', '.join(names)}); give one weight per class, in that order")
    if weights != "balanced":
        return weights
    from sklearn.utils.class_weight import compute_class_weight

    from sentiment_rnn.data import column_numpy

    labels = column_numpy(splits.train, "label")
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() == 0:
        raise SentimentRNNError(f"train.class_weights=balanced: class '{names[int(counts.argmin())]}' has no row in "
                                "the training split; give the weights as a list, one per class, e.g. [1, 9]")
    return compute_class_weight("balanced", classes=np.arange(len(names)), y=labels).tolist()


def build_loss(weights: list[float] | None, device):
    """Cross-entropy, weighted per class when train.class_weights asks for it (imbalanced data)."""
    import torch

    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    return torch.nn.CrossEntropyLoss(weight=weight)
