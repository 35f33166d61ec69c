"""export --quantize (through the installed command): an int8 graph that is smaller, recorded in meta.json, and
that predict and evaluate use; a graph with nothing to quantize is refused in one line."""

import json
import logging
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.quantize import quantize_in_place

from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")


def sentiment(*args, installed: bool = False) -> subprocess.CompletedProcess:
    """The command through the installed script when `installed`, else in this process."""
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300) if installed \
        else run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_quantized_export_is_smaller_recorded_and_predicts_and_evaluates(tiny_run, tiny_export, tmp_path):
    out = tmp_path / "int8 [v2]"
    said = sentiment("export", "-m", tiny_run, "-o", out, "--quantize", installed=True).stdout.replace("\n", "")
    meta = json.loads((out / "meta.json").read_text())
    q = meta["quantization"]
    assert q["method"] == "onnxruntime.quantization.quantize_dynamic" and q["weight_type"] == "int8"
    assert q["int8_bytes"] == (out / "model.onnx").stat().st_size < q["fp32_bytes"] / 2
    assert q["fp32_bytes"] == (tiny_export / "model.onnx").stat().st_size
    assert q["rows"] == meta["parity_rows"] and 0.8 <= q["label_agreement"] <= 1 and q["max_abs_diff"] > 0
    assert f"to {out} (ONNX" in said and f"of {q['rows']} test rows" in said  # the path shown as written
    weights = onnx.load(str(out / "model.onnx")).graph.initializer
    assert any(w.data_type == TensorProto.INT8 for w in weights)
    assert json.loads((tiny_export / "meta.json").read_text())["quantization"] is None
    int8 = json.loads(sentiment("predict", "-m", out, "--format", "json", "a moving film", "a dull mess").stdout)
    assert [r["label"] in ("negative", "positive") for r in int8] == [True, True]
    scored = {name: json.loads(sentiment("evaluate", "-m", model, "--json").stdout)
              for name, model in (("int8", out), ("fp32", tiny_export))}
    assert scored["int8"]["n"] == scored["fp32"]["n"]
    assert abs(scored["int8"]["accuracy"] - scored["fp32"]["accuracy"]) <= 1 - q["label_agreement"] + 1e-9


def test_a_graph_with_no_op_to_quantize_is_refused_in_one_line(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    before = path.read_bytes()
    with pytest.raises(SentimentRNNError, match=r"supports none of this model's ops \(Relu\); export it without"):
        quantize_in_place(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_quantizing_leaves_the_callers_logging_level_as_it_was(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], [weight])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        quantize_in_place(path)
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
    assert any(init.data_type == TensorProto.INT8 for init in onnx.load(str(path)).graph.initializer)
