"""Scoring a classifier: its loss and predictions over a loader, and the metrics they give.

Used by training (validation every epoch, the test split once) and by `evaluate`. torch is imported where
it is used: the ONNX backend scores exports with `classification_metrics` in an install without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

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
