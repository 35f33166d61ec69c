"""int8 dynamic quantization of an ONNX export (`export --quantize`), through onnxruntime's public
`onnxruntime.quantization.quantize_dynamic`.

Dynamic quantization stores the weights of the ops onnxruntime knows how to quantize (here the embedding's
Gather and the head's MatMul; an LSTM too) as int8 with a scale, and quantizes their activations on the fly.
onnxruntime has no integer kernel for the RNN and GRU ops: their weights stay fp32. The quantized graph is
checked against the fp32 one on the run's test rows, and that agreement is recorded in meta.json.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from sentiment_rnn.errors import SentimentRNNError


def quantize_in_place(model_path: Path) -> None:
    """Replace model_path's graph with its int8 dynamic quantization; one-line error if nothing quantizes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = model_path.with_name(f".{model_path.name}.int8")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing advice on the root logger
    try:
        quantize_dynamic(model_path, quantized, weight_type=QuantType.QInt8)
    except Exception as exc:  # onnxruntime's quantizer raises many types; the user needs one line
        quantized.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise SentimentRNNError(f"onnxruntime cannot quantize this model ({first}); export it without --quantize") \
            from None
    finally:
        root.setLevel(level)  # a library call leaves the caller's logging as it found it
    int8_types = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)  # the types quantized weights are stored in
    if not any(init.data_type in int8_types for init in onnx.load(str(quantized)).graph.initializer):
        quantized.unlink()
        ops = sorted({node.op_type for node in onnx.load(str(model_path)).graph.node})
        raise SentimentRNNError(f"onnxruntime's dynamic quantization supports none of this model's ops "
                                f"({', '.join(ops)}); export it without --quantize")
    os.replace(quantized, model_path)


def agreement(fp32_probs: np.ndarray, int8_probs: np.ndarray) -> dict:
    """How closely the quantized graph follows the fp32 one on the same texts ([N, C] each)."""
    return {"rows": len(fp32_probs),
            "label_agreement": float((fp32_probs.argmax(1) == int8_probs.argmax(1)).mean()) if len(fp32_probs) else 1.0,
            "max_abs_diff": float(abs(fp32_probs - int8_probs).max()) if len(fp32_probs) else 0.0}
