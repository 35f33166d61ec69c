"""evaluate --label-map, --predictions and --show-wrong through the CLI (in this process), on the tiny run and
its export."""

import json
import subprocess
from pathlib import Path

import pytest

from in_process import run_cli

WORDS = ["great", "awful", "fine", "dull", "moving", "silly", "warm", "tedious"]


def one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def labeled_csv(path: Path, labels: tuple[str, str], n: int = 30) -> Path:
    rows = [f"review {i} was {WORDS[i % 8]} and {WORDS[(i * 3) % 8]} [v{i}],{labels[i % 2]}" for i in range(n)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_label_map_scores_data_whose_labels_are_spelled_otherwise(tiny_run, tmp_path):
    short = labeled_csv(tmp_path / "short.csv", ("neg", "pos"))
    one_line_error(run_cli("evaluate", "-m", tiny_run, "--data", short), "or map them with --label-map")
    mapped = run_cli("evaluate", "-m", tiny_run, "--data", short, "--label-map", "pos=positive, neg=negative", "--json")
    assert mapped.returncode == 0, mapped.stderr
    long = labeled_csv(tmp_path / "long.csv", ("negative", "positive"))
    spelled = run_cli("evaluate", "-m", tiny_run, "--data", long, "--json")
    mapped, spelled = json.loads(mapped.stdout), json.loads(spelled.stdout)
    assert mapped["n"] == 30 and mapped["confusion_matrix"] == spelled["confusion_matrix"]
    assert mapped["per_class"]["positive"]["support"] == 15


def test_label_map_refuses_a_target_the_model_lacks_and_a_malformed_pair(tiny_run, tmp_path):
    short = labeled_csv(tmp_path / "short.csv", ("neg", "pos"))
    one_line_error(run_cli("evaluate", "-m", tiny_run, "--data", short, "--label-map", "pos=good,neg=negative"),
                   "maps 'pos' to 'good', which is not one of the model's labels (negative, positive)")
    one_line_error(run_cli("evaluate", "-m", tiny_run, "--data", short, "--label-map", "pos"),
                   "is not DATA_LABEL=MODEL_LABEL")


def test_a_single_data_file_is_named_in_errors_not_as_split_train(tiny_run, tmp_path):
    odd = labeled_csv(tmp_path / "odd.csv", ("neg", "meh"))
    proc = run_cli("evaluate", "-m", tiny_run, "--data", odd)
    one_line_error(proc, f"'{odd}' has label 'neg'")
    assert "split 'train'" not in proc.stderr
    data = labeled_csv(tmp_path / "d.csv", ("negative", "positive"))
    table = run_cli("evaluate", "-m", tiny_run, "--data", data)
    assert table.returncode == 0, table.stderr
    assert "every row" in table.stdout and "train split" not in table.stdout  # scored whole, as the README says
    one_line_error(run_cli("evaluate", "-m", tiny_run, "--data", data, "--split", "test"),
                   f"'{data}' is a single file, scored whole; drop --split")


def check_predictions(rows: list[dict], metrics: dict) -> None:
    assert len(rows) == metrics["n"]
    for row in rows:
        assert row["predicted"] == max(row["probabilities"], key=row["probabilities"].get)
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert sum(r["predicted"] == r["label"] for r in rows) / len(rows) == pytest.approx(metrics["accuracy"])
    wrong = metrics["most_confidently_wrong"]
    assert 0 < len(wrong) <= 5 and all(r["predicted"] != r["label"] for r in wrong)
    confidence = [r["probabilities"][r["predicted"]] for r in wrong]
    assert confidence == sorted(confidence, reverse=True)
    all_wrong = [r["probabilities"][r["predicted"]] for r in rows if r["predicted"] != r["label"]]
    assert confidence[0] == max(all_wrong)


def test_predictions_file_holds_every_row_in_the_datas_order(tiny_run, tmp_path):
    data, out = labeled_csv(tmp_path / "d.csv", ("negative", "positive")), tmp_path / "pred.jsonl"
    proc = run_cli("evaluate", "-m", tiny_run, "--data", data, "--predictions", out, "--json")
    assert proc.returncode == 0, proc.stderr
    metrics, rows = json.loads(proc.stdout), read_jsonl(out)
    assert [r["text"] for r in rows] == [line.rsplit(",", 1)[0] for line in data.read_text().splitlines()[1:]]
    assert [r["label"] for r in rows] == ["negative", "positive"] * 15
    check_predictions(rows, metrics)
    assert set(tmp_path.iterdir()) == {data, out}  # no temporary file left beside it


def test_predictions_of_an_export_equal_the_runs_and_the_summary_shows_the_wrong_rows(tiny_run, tiny_export, tmp_path):
    scored = {}
    for name, model in (("run", tiny_run), ("export", tiny_export)):
        proc = run_cli("evaluate", "-m", model, "--predictions", tmp_path / f"{name}.jsonl", "--json")
        assert proc.returncode == 0, proc.stderr
        scored[name] = read_jsonl(tmp_path / f"{name}.jsonl")
        check_predictions(scored[name], json.loads(proc.stdout))
    by_text = {r["text"]: r for r in scored["run"]}
    for row in scored["export"]:
        assert row["label"] == by_text[row["text"]]["label"] and row["predicted"] == by_text[row["text"]]["predicted"]
    shown = run_cli("evaluate", "-m", tiny_export, "--predictions", tmp_path / "again.jsonl", "--show-wrong", "2")
    assert shown.returncode == 0, shown.stderr
    worst = sorted((r for r in scored["export"] if r["predicted"] != r["label"]),
                   key=lambda r: -r["probabilities"][r["predicted"]])[0]
    assert "2 most confidently wrong rows" in shown.stdout and worst["text"][:40] in shown.stdout.replace("\n", "")


def test_a_predictions_file_that_cannot_be_written_leaves_nothing_behind(tiny_export, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    proc = run_cli("evaluate", "-m", tiny_export, "--predictions", target)
    one_line_error(proc, f"cannot write '{target}': it is a directory")
    assert list(tmp_path.iterdir()) == [target] and not list(target.iterdir())
    one_line_error(run_cli("evaluate", "-m", tiny_export, "--predictions", tmp_path / "absent" / "p.jsonl"),
                   "its folder does not exist")


def test_predictions_never_replace_a_file_unasked_nor_the_data_or_a_runs_own_files(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    def evaluate(*args):
        return CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), *map(str, args)])

    data = labeled_csv(tmp_path / "data.csv", ("negative", "positive"))
    kept = data.read_bytes()
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine\n")
    result = evaluate("--predictions", taken)
    assert result.exit_code == 1 and "already exists; pass --overwrite to replace it" in result.output
    assert taken.read_text() == "mine\n"
    assert evaluate("--predictions", taken, "--overwrite").exit_code == 0 and taken.read_text() != "mine\n"
    result = evaluate("--data", data, "--predictions", data, "--overwrite")
    assert result.exit_code == 1 and "it is (or is in) the data being scored" in result.output
    split = tiny_run / "split.json"
    before = split.read_bytes()
    result = evaluate("--predictions", split, "--overwrite")
    assert result.exit_code == 1 and "its folder is a run or an export" in result.output
    assert split.read_bytes() == before and data.read_bytes() == kept


def test_column_options_without_data_are_refused_and_no_wrong_row_is_said_plainly(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app
    from sentiment_rnn.predict import Predictor

    for option in ("--text-column", "--label-column"):
        result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), option, "review"])
        assert result.exit_code == 1 and "name columns of --data" in result.output, result.output
    texts = [f"review {i} was {WORDS[i % 8]}" for i in range(12)]
    guessed = [rec["label"] for rec in Predictor.from_dir(tiny_run).predict(texts)]  # gold = predicted: none wrong
    data = tmp_path / "right.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, guessed, strict=True)))
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(data), "--show-wrong", "3"])
    assert result.exit_code == 0 and "No row is wrong" in result.output and "0 most confidently" not in result.output


def test_scoring_the_split_a_run_trained_on_warns_that_it_shows_memory(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app
    from sentiment_rnn.config import DataConfig
    from sentiment_rnn.evaluate import _trained_on

    evaluate = ["evaluate", "-m", str(tiny_run), "--data", "rotten_tomatoes", "--split"]
    trained = CliRunner().invoke(app, [*evaluate, "train"])
    assert trained.exit_code == 0, trained.output
    assert "warning: the 'train' split of rotten_tomatoes holds the rows this run trained on" in trained.output
    other = labeled_csv(tmp_path / "other.csv", ("negative", "positive"))
    held_out = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(other), "--json"])
    assert held_out.exit_code == 0 and "warning" not in held_out.output, held_out.output  # not in JSON nor on stderr
    folder = tmp_path / "reviews"
    folder.mkdir()
    record = {"source": str(folder)}  # a run trained on a local folder in the Hub's layout
    assert "every row of hf:" in _trained_on(f"hf:{folder}", None, DataConfig(source=str(folder)), record)
    assert _trained_on(str(folder), "validation", DataConfig(source=str(folder)), record) is None
    assert _trained_on(str(tmp_path), "train", DataConfig(source=str(folder)), record) is None


def test_evaluate_reports_the_share_of_unknown_tokens_the_same_for_a_run_and_its_export(tiny_run, tiny_export,
                                                                                          tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app
    from sentiment_rnn.evaluate import evaluate_run
    from sentiment_rnn.onnx_backend import evaluate_export
    from sentiment_rnn.tokenizer import unknown_shares

    assert unknown_shares([[5, 1, 7], [1], [4, 4]], 1) == {"unknown_tokens": 2 / 6, "texts_with_unknown": 2 / 3}
    ran, exported = evaluate_run(tiny_run), evaluate_export(tiny_export)
    assert 0 < ran["unknown_tokens"] < ran["texts_with_unknown"] < 1  # 400 training rows: some test words unseen
    for key in ("unknown_tokens", "texts_with_unknown"):
        assert exported[key] == pytest.approx(ran[key])
    unseen = tmp_path / "unseen.csv"
    unseen.write_text("text,label\nzorblax quuxing,negative\nplumbus,positive\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(unseen)])
    assert result.exit_code == 0, result.output
    assert "[UNK], words the vocabulary lacks: 100.0% of the scored tokens, in 100.0% of the texts" in result.output


def test_a_run_whose_recorded_data_file_is_gone_says_so_and_how_to_score_it(tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    data = labeled_csv(tmp_path / "reviews.csv", ("negative", "positive"), n=60)
    run_dir = tmp_path / "run"
    trained = CliRunner().invoke(app, ["train", "-c", "tiny", "--set", f"data.source={data}", "--set",
                                       "train.epochs=1", "-o", str(run_dir)])
    assert trained.exit_code == 0, trained.output
    assert CliRunner().invoke(app, ["evaluate", "-m", str(run_dir)]).exit_code == 0
    data.rename(tmp_path / "moved.csv")
    for split in ("test", "validation"):
        result = CliRunner().invoke(app, ["evaluate", "-m", str(run_dir), "--split", split])
        assert result.exit_code == 1 and result.output.startswith(
            f"Error: the data this run was trained on, '{data}', is gone; put it back there"), result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1
