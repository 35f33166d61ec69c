"""explain: the running reading ends at predict's probability, integrated gradients are complete, occlusion
and the baseline's shares are exact, every output is written and the HTML page renders in a real browser."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from sentiment_rnn.cli import app
from sentiment_rnn.config import ModelConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.explain import README_PAIR, Explainer, logits_from_embedded, reading_method, running_logits
from sentiment_rnn.models import build_model
from sentiment_rnn.predict import Predictor
from sentiment_rnn.rundir import load_run

from conftest import TINY

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")
# Debian's package is `chromium`; other systems name the same headless browser otherwise. CI installs it (.ci/run).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM = next((path for path in map(shutil.which, BROWSERS) if path), None)
LONG = "a moving and often funny film " * 8  # 48 tokens, more than tiny's max_length of 24
RNN_MODELS = {  # one-directional ones read the top layer; bidirectional ones re-read each prefix
    "tanh rnn, 2 layers": ModelConfig(cell="rnn", hidden_size=8, num_layers=2),
    "lstm": ModelConfig(cell="lstm", hidden_size=8),
    "gru, cells encoder": ModelConfig(cell="gru", encoder="cells", hidden_size=[8, 6]),
    "bidirectional lstm": ModelConfig(cell="lstm", hidden_size=8, bidirectional=True),
    "bidirectional rnn, cells": ModelConfig(cell="rnn", encoder="cells", hidden_size=[8], bidirectional=True),
}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory) -> Path:
    from sentiment_rnn.config import load_config
    from sentiment_rnn.train import train

    out = tmp_path_factory.mktemp("tiny-baseline") / "run"
    train(load_config(TINY, ["model.kind=per_word_linear"]), out)
    return out


@pytest.fixture(scope="module")
def explainer(tiny_run) -> Explainer:
    return Explainer.from_dir(tiny_run)


def random_ids(steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 50, (steps,), generator=torch.Generator().manual_seed(seed))  # [T]


def test_last_running_probability_equals_predicts(tiny_run, explainer):
    texts = [*README_PAIR, "zzqx vrrk", LONG, "!"]
    expected = Predictor.from_dir(tiny_run).probabilities(texts)[:, explainer.target]  # [N]
    for text, p in zip(texts, expected.tolist(), strict=True):
        record = explainer.explain(text, steps=8)
        assert record["tokens"][-1]["p_running"] == pytest.approx(p, abs=1e-6)
        assert record["probabilities"][record["target"]] == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("name", list(RNN_MODELS))
def test_running_reading_equals_the_model_re_reading_each_prefix(name):
    torch.manual_seed(0)
    model = build_model(RNN_MODELS[name], 50, 2, max_length=16).eval()
    ids = random_ids(7)
    with torch.no_grad():
        running = running_logits(model, ids)  # [T, C]
        prefixes = torch.cat([model(ids[:t].view(-1, 1), torch.tensor([t])) for t in range(1, 8)])  # [T, C]
    assert reading_method(model) == ("prefix" if RNN_MODELS[name].bidirectional else "top_layer")
    torch.testing.assert_close(running, prefixes, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", [*RNN_MODELS, "per-word linear"])
def test_forward_from_the_embedding_layer_equals_the_models_forward(name):
    """Integrated gradients run the model from its embedding output on; a model refactor must keep this."""
    torch.manual_seed(0)
    cfg = RNN_MODELS.get(name, ModelConfig(kind="per_word_linear"))
    model = build_model(cfg, 50, 2, max_length=16).eval()
    ids = torch.stack([random_ids(9, 1), torch.cat([random_ids(5, 2), torch.zeros(4, dtype=torch.long)])], 1)  # [T, B]
    lengths = torch.tensor([9, 5])
    with torch.no_grad():
        torch.testing.assert_close(logits_from_embedded(model, model.embedding(ids), lengths), model(ids, lengths),
                                   atol=1e-6, rtol=0)


def test_integrated_gradients_sum_to_the_change_from_the_baseline(explainer):
    for text in README_PAIR:
        ig = explainer.explain(text, steps=200)["integrated_gradients"]
        assert abs(ig["expected_sum"]) > 0.01, "the text must move P away from the [PAD] baseline to test this"
        assert ig["sum"] == pytest.approx(ig["expected_sum"], rel=0.01)
        assert abs(ig["delta"]) <= 0.01 * abs(ig["expected_sum"])


def test_occlusion_of_an_absent_word_is_zero_and_of_a_present_word_is_its_position_change(explainer):
    text = "the film is not good zzqx"  # zzqx is outside the vocabulary: [UNK]
    assert explainer.occlude_word(text, "beautiful") == 0.0
    assert explainer.occlude_word(text, "vrrk") == 0.0  # also [UNK], but not a word of this text
    record = explainer.explain(text, steps=4)
    position = [t["word"] for t in record["tokens"]].index("not")
    assert explainer.occlude_word(text, "NOT") == pytest.approx(record["tokens"][position]["occlusion"], abs=1e-7)
    assert any(t["occlusion"] != 0 for t in record["tokens"])


def test_baseline_position_contributions_sum_to_its_logits(baseline_run):
    explainer = Explainer.from_dir(baseline_run)
    run = load_run(baseline_run)
    for text in [*README_PAIR, LONG]:
        record = explainer.explain(text, steps=4)
        shares = record["contributions"]
        ids = torch.tensor([t["id"] for t in record["tokens"]]).view(-1, 1)  # [T, 1]
        with torch.no_grad():
            logits = run.model(ids, torch.tensor([ids.shape[0]]))[0]  # [C]
        for c, label in enumerate(record["labels"]):
            total = (sum(t["contribution_per_class"][label] for t in record["tokens"])
                     + shares["padding_per_class"][label] + shares["head_bias_per_class"][label])
            assert total == pytest.approx(logits[c].item(), abs=1e-5)
        margin = logits[1] - logits[0]  # binary: toward positive = positive logit minus negative logit
        total = sum(t["contribution"] for t in record["tokens"]) + shares["padding"] + shares["head_bias"]
        assert record["target"] == "positive" and total == pytest.approx(margin.item(), abs=1e-5)
        assert record["reading"] == "prefix"


def test_json_marks_unknown_tokens_and_says_when_all_words_were_unknown(tiny_run):
    result = CliRunner().invoke(app, ["explain", "-m", str(tiny_run), "--format", "json", "--steps", "4", "zzqx vrrk"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert [t["token"] for t in record["tokens"]] == ["[UNK]", "[UNK]"]
    assert [t["word"] for t in record["tokens"]] == ["zzqx", "vrrk"] and all(t["unknown"] for t in record["tokens"])
    for key in ("p_running", "integrated_gradients", "occlusion"):
        assert all(isinstance(t[key], float) for t in record["tokens"])
    assert "all 2 word(s) of this text are unknown" in result.stderr


def test_a_text_longer_than_max_length_says_how_many_tokens_were_not_read(tiny_run):
    result = CliRunner().invoke(app, ["explain", "-m", str(tiny_run), "--steps", "4", LONG])
    assert result.exit_code == 0, result.output
    assert "the model read the first 24 of 48 tokens (data.max_length); 24 token(s) at the end were not read" \
        in " ".join(result.stderr.split())
    assert "P(positive)" in result.stdout and "occlusion" in result.stdout


def test_stdin_gives_one_explanation_per_line_and_refuses_an_undecodable_line(tiny_run):
    argv = ["explain", "-m", str(tiny_run), "--format", "json", "--steps", "4", "-"]
    result = CliRunner().invoke(app, argv, input="a fine film\nnot good at all\n")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in json.loads(result.stdout)] == ["a fine film", "not good at all"]
    undecodable = CliRunner().invoke(app, argv, input=b"a fine film\n\xff\xfe\n")
    one_line_error(undecodable, "line 2 of stdin is not valid UTF-8")


def one_line_error(result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and expected in lines[0], result.output


@pytest.mark.parametrize("argv,expected", [
    (["   "], "an empty text cannot be explained"),
    ([], "nothing to explain"),
    (["good", "--output", "{tmp}/out.svg"], "unknown extension '.svg'"),
    (["good", "--output", "{tmp}/absent/out.png"], "does not exist"),
    (["--file", "{tmp}/blank-line.txt"], "line 2 of"),
    (["--file", "{tmp}/absent.txt"], "not found"),
    (["good", "--output", "{tmp}/keep.html"], "'{tmp}/keep.html' already exists; pass --overwrite to replace it"),
    (["good", "--output", "{run}/curves.png", "--overwrite"], "its folder is a run or an export"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(tiny_run, tmp_path, argv, expected):
    (tmp_path / "blank-line.txt").write_text("a fine film\n\nanother\n")
    (tmp_path / "keep.html").write_text("a page of the user's")
    fill = {"{tmp}": str(tmp_path), "{run}": str(tiny_run)}
    argv, expected = ([_fill(a, fill) for a in argv]), _fill(expected, fill)
    before = {p: p.read_bytes() for p in [*tmp_path.iterdir(), tiny_run / "curves.png"]}
    one_line_error(CliRunner().invoke(app, ["explain", "-m", str(tiny_run), *argv]), expected)
    assert set(tmp_path.iterdir()) == set(before) - {tiny_run / "curves.png"}
    assert all(p.read_bytes() == content for p, content in before.items())


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def test_overwrite_replaces_an_existing_output_file(tiny_run, tmp_path):
    (tmp_path / "page.html").write_text("an older page")
    result = CliRunner().invoke(app, ["explain", "-m", str(tiny_run), "good", "-o", str(tmp_path / "page.html"),
                                      "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")


def test_a_model_without_a_head_explain_understands_is_refused(tiny_run):
    run = load_run(tiny_run)
    run.model.head = nn.Sequential(run.model.head, nn.Tanh())
    with pytest.raises(SentimentRNNError, match="explain does not understand a RNNClassifier"):
        Explainer(run)
    run.model = nn.Sequential(nn.Embedding(10, 4))
    with pytest.raises(SentimentRNNError, match="explain does not understand a Sequential"):
        Explainer(run)


@pytest.fixture(scope="module")
def written(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """The README pair (read from a file) as an HTML page from the installed command, and as a PNG."""
    folder = tmp_path_factory.mktemp("explain-out")
    texts = folder / "pair.txt"
    texts.write_text("\n".join(README_PAIR) + "\n")
    paths = {suffix: folder / f"pair{suffix}" for suffix in (".png", ".html")}
    argv = ["explain", "--model", str(tiny_run), "--file", str(texts), "--steps", "8", "--output"]
    proc = subprocess.run([CLI, *argv, str(paths[".html"])], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = CliRunner().invoke(app, [*argv, str(paths[".png"])])
    assert result.exit_code == 0, result.output
    assert "beautiful" in proc.stdout and "beautiful" in result.stdout
    return paths


def test_png_and_html_are_written_and_not_empty(written):
    assert written[".png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[".png"].stat().st_size > 10_000
    page = written[".html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "i do not think the flower is beautiful" in page
    assert "src=" not in page and "href=" not in page  # self-contained: nothing to fetch


@pytest.mark.skipif(CHROMIUM is None, reason=f"no headless Chromium on PATH (looked for {', '.join(BROWSERS)}); "
                    "install it as .ci/run does: apt-get install chromium")
def test_html_renders_in_headless_chromium(written, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = written[".html"].resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], check=False, capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-1000:]
    assert "<polyline" in dom.stdout and dom.stdout.count("<section>") == 2
    assert all(word in dom.stdout for word in ("flower", "beautiful", "think"))
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 5_000


def test_compare_baseline_reads_the_readme_pair_with_both_models(tiny_run, baseline_run, tmp_path):
    from sentiment_rnn.compare import read_pair

    figure = tmp_path / "readings.png"
    readings = read_pair({"rnn": tiny_run, "per_word_linear": baseline_run}, figure)
    assert readings["texts"] == list(README_PAIR)
    for kind in ("rnn", "per_word_linear"):
        assert [r["text"] for r in readings[kind]] == list(README_PAIR)
        assert [t["word"] for t in readings[kind][1]["tokens"]] == README_PAIR[1].split()
    assert "contributions" in readings["per_word_linear"][0] and "contributions" not in readings["rnn"][0]
    json.dumps(readings)  # goes into comparison.json as it is
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("target", ["positive", "a_long_neutral_label"])
def test_the_terminal_tables_fit_80_columns_with_every_number_whole(explainer, target):
    from rich.console import Console

    from sentiment_rnn.explain_render import terminal

    record = explainer.explain("the movie was okay and the plot is fine but the acting was average xyz qwz")
    record["probabilities"][target] = record["probabilities"].pop(record["target"])
    record["target"] = target  # the label column is as wide as "P(<target>)"
    console = Console(width=80, record=True, color_system=None)
    for renderable in terminal(record, console.width):
        console.print(renderable)
    shown = console.export_text()
    assert "…" not in shown, shown
    assert all(f"{t['integrated_gradients']:+.3f}" in shown and f"{t['occlusion']:+.3f}" in shown
               for t in record["tokens"])
