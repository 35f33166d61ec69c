"""Fine-tuning from a pretrained run: init_from copies the pretrained tensors and reuses the tokenizer,
per-layer learning rates, gradual unfreezing, schedules that resume exactly, concat pooling, bad input,
and the whole pretrain -> fine-tune -> predict path through the installed CLI."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sentiment_rnn import finetune, rundir
from sentiment_rnn.cli import app
from sentiment_rnn.compare import compare_baseline
from sentiment_rnn.config import load_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.lm.pretrain import pretrain_lm
from sentiment_rnn.models import build_model
from sentiment_rnn.models.rnn import concat_pool
from sentiment_rnn.optim import build_optimizer, build_scheduler
from sentiment_rnn.train import on_epoch_start, train

ROOT = Path(__file__).resolve().parent.parent
SHAPE = ["model.cell=lstm", "model.hidden_size=24", "model.num_layers=2", "model.embedding_dim=16"]
TINY_LM = ["data.limit=400", "lm.corpora=[rotten_tomatoes]", "tokenizer.max_vocab=500", "train.batch_size=8",
           "train.epochs=1", "train.threads=1", "lm.eval_batch_size=2", "lm.bptt=12", "train.checkpoint_every=null"]
TINY_CLS = ["train.epochs=1", "train.max_steps=3"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A finished tiny pretrain-lm run; copy it before tampering with it."""
    out = tmp_path_factory.mktemp("lm") / "run"
    pretrain_lm(load_config(ROOT / "configs" / "lm.yaml", [*SHAPE, *TINY_LM]), out)
    return out


def finetune_config(source: Path, *extra: str):
    return load_config(ROOT / "configs" / "tiny.yaml", [*SHAPE, *TINY_CLS, f"model.init_from={source}", *extra])


def test_init_from_beside_pretrained_vectors_is_refused_before_they_overwrite_its_embedding(tiny_run, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("film " + " ".join(["0.1"] * 32) + "\n")  # tiny's width
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"model.init_from={tiny_run}",
                                                          f"model.embedding.pretrained={vectors}"])
    with pytest.raises(SentimentRNNError, match="brings its embedding, which model.embedding.pretrained .* would "
                                                "overwrite; drop one: --set model.embedding.pretrained=null"):
        finetune.read_init_source(config)


def test_init_from_copies_exactly_the_pretrained_tensors_and_reuses_the_tokenizer(lm_run, tmp_path):
    config = finetune_config(lm_run)
    source = finetune.read_init_source(config)
    model = build_model(config.model, 500, 2, 24)
    finetune.load_init(model, source)
    pretrained = load_file(str(lm_run / rundir.WEIGHTS))
    shared = [k for k in model.state_dict() if k.startswith(("embedding.", "encoder."))]
    assert shared and all(torch.equal(model.state_dict()[k], pretrained[k]) for k in shared)

    out = tmp_path / "run"
    train(finetune_config(lm_run, "train.lr=1e-9"), out)  # a rate near zero: the saved weights are the start
    saved = load_file(str(out / rundir.WEIGHTS))
    assert all(torch.allclose(saved[k], pretrained[k], atol=1e-6) for k in shared), "train() did not start from the LM"
    assert (out / rundir.TOKENIZER).read_text() == (lm_run / rundir.TOKENIZER).read_text()
    meta = json.loads((out / rundir.META).read_text())
    lm_meta = json.loads((lm_run / rundir.META).read_text())
    assert meta["init_from"] == {"path": str(lm_run.resolve()), "weights_sha256": lm_meta["weights_sha256"]}
    assert meta["weights_sha256"] == rundir.weights_sha256((out / rundir.WEIGHTS).read_bytes())


def test_bad_init_from_fails_in_one_line_naming_both_values_and_writes_nothing(lm_run, tmp_path):
    incomplete, tampered = tmp_path / "incomplete", tmp_path / "tampered"
    shutil.copytree(lm_run, incomplete)
    (incomplete / rundir.METRICS).unlink()
    shutil.copytree(lm_run, tampered)
    weights = bytearray((tampered / rundir.WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF  # one bit pattern in the last tensor: still loadable, no longer the trained weights
    (tampered / rundir.WEIGHTS).write_bytes(bytes(weights))
    cases = [(finetune_config(tmp_path / "nowhere"), "is not a directory"),
             (finetune_config(incomplete), "is not a finished run (no metrics.json)"),
             (finetune_config(lm_run, "model.hidden_size=32"), "has model.hidden_size 24, this config has 32"),
             (finetune_config(lm_run, "model.cell=gru"), "has model.cell lstm, this config has gru"),
             (finetune_config(lm_run, "model.num_layers=1"), "has model.num_layers 2, this config has 1"),
             (finetune_config(lm_run, "model.embedding_dim=8"), "has model.embedding_dim 16, this config has 8"),
             (finetune_config(tampered), "the weights were changed after training")]
    for config, message in cases:
        with pytest.raises(SentimentRNNError, match=re.escape(message)) as err:
            train(config, tmp_path / "out")
        assert "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()
    for key, value in (("model.pooling", "mean"), ("train.schedule", "cosine")):
        with pytest.raises(SentimentRNNError, match=key):
            finetune_config(lm_run, f"{key}={value}")


def test_each_layer_group_gets_its_learning_rate():
    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.lr=0.01", "train.layer_lr_decay=2.0"])
    model = build_model(config.model, 100, 2, 24)
    optimizer = build_optimizer(model, config.train)
    by_name = {}
    for group in optimizer.param_groups:
        by_name.setdefault(group["name"], set()).add(group["lr"])
    assert by_name == {"head": {0.01}, "encoder.1": {0.005}, "encoder.0": {0.0025}, "embedding": {0.00125}}
    seen = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def test_gradual_unfreezing_trains_exactly_the_open_groups_each_epoch():
    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.unfreeze=1", "train.weight_decay=0.1"])
    torch.manual_seed(0)
    model = build_model(config.model, 50, 2, 24)
    optimizer = build_optimizer(model, config.train)
    ids, lengths, y = torch.randint(1, 50, (6, 4)), torch.tensor([6, 5, 3, 2]), torch.tensor([0, 1, 0, 1])
    names = [name for name, _ in model.parameter_groups()]  # embedding, encoder.0, encoder.1, head
    for epoch in range(1, 6):
        on_epoch_start(model, epoch, config)
        before = {n: [p.detach().clone() for p in ps] for n, ps in model.parameter_groups()}
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(ids, lengths), y).backward()
        optimizer.step()
        moved = [n for n, ps in model.parameter_groups()
                 if any(not torch.equal(a, p) for a, p in zip(before[n], ps, strict=True))]
        trainable = [n for n, ps in model.parameter_groups() if all(p.requires_grad for p in ps)]
        assert moved == trainable == names[max(0, len(names) - epoch):], epoch


def test_concat_pooling_reads_real_tokens_only():
    config = load_config(ROOT / "configs" / "tiny.yaml", ["model.pooling=concat"])
    model = build_model(config.model, 50, 2, 24).eval()
    ids = torch.randint(1, 50, (7, 1))
    padded = torch.cat([ids, torch.randint(1, 50, (3, 1))])  # [10, 1]: junk after the sentence's end
    with torch.no_grad():
        assert torch.allclose(model(ids, torch.tensor([7])), model(padded, torch.tensor([7])), atol=1e-6)
    out = torch.tensor([[[1.0]], [[3.0]], [[-9.0]]])  # [T=3, B=1, H=1], the last step is padding
    assert concat_pool(out, out[1], torch.tensor([2])).tolist() == [[3.0, 3.0, 2.0]]


def installed(*args: str) -> subprocess.CompletedProcess:
    """The installed `sentiment-rnn` script, in a process of its own."""
    return subprocess.run(["sentiment-rnn", *args], capture_output=True, text=True, check=False)


def test_cli_pretrains_fine_tunes_and_predicts(tmp_path):
    lm, clf = tmp_path / "lm", tmp_path / "clf"
    shape = [f"--set={s}" for s in SHAPE]
    done = installed("pretrain-lm", "-c", "configs/lm.yaml", "-o", str(lm), *shape, *[f"--set={s}" for s in TINY_LM])
    assert done.returncode == 0, done.stderr
    # The refusal's hint is the command to run: it names every shape key this LM's width differs in.
    wrong = CliRunner().invoke(app, ["predict", "--model", str(lm), "the flower is so beautiful"])
    hint = wrong.stderr.strip().split("fine-tune one from it: ")[1]
    assert hint == ("sentiment-rnn train -c finetune --set model.embedding_dim=16 --set model.hidden_size=24 "
                    f"--set model.num_layers=2 --set model.init_from={lm}")
    done = installed(*shlex.split(hint)[1:], "-o", str(clf),
                   *[f"--set={s}" for s in ["data.limit=400", "train.epochs=2", "train.max_steps=3",
                                            "train.threads=1"]])
    assert done.returncode == 0, done.stderr
    done = CliRunner().invoke(app, ["predict", "--model", str(clf), "the flower is so beautiful"])
    assert done.exit_code == 0 and ("positive" in done.stdout or "negative" in done.stdout), done.stderr
    # The refusals run in-process (the same Typer app and error boundary), which spares a start-up each.
    assert wrong.exit_code == 1 and "is a pretrain-lm run" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    bad = CliRunner().invoke(app, ["train", "-c", "configs/finetune.yaml", "-o", str(tmp_path / "bad"),
                                   "--set", f"model.init_from={tmp_path / 'missing'}"])
    assert bad.exit_code == 1 and "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_pretrain_lm_continues_a_language_model_with_its_tokenizer(lm_run, tmp_path):
    # ULMFiT's second step: the same LM, read on further text; a rate near zero leaves the copied tensors as they were
    out = tmp_path / "continued"
    pretrain_lm(load_config(ROOT / "configs" / "lm.yaml",
                            [*SHAPE, *TINY_LM, "train.lr=1e-9", "train.max_steps=2", f"model.init_from={lm_run}"]), out)
    assert (out / rundir.TOKENIZER).read_text() == (lm_run / rundir.TOKENIZER).read_text()
    before, after = load_file(str(lm_run / rundir.WEIGHTS)), load_file(str(out / rundir.WEIGHTS))
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert json.loads((out / rundir.META).read_text())["init_from"]["path"] == str(lm_run.resolve())

    classifier = tmp_path / "classifier"
    train(finetune_config(lm_run), classifier)
    with pytest.raises(SentimentRNNError, match="is a classifier run; pretrain-lm continues a pretrain-lm run"):
        pretrain_lm(load_config(ROOT / "configs" / "lm.yaml", [*SHAPE, *TINY_LM, f"model.init_from={classifier}"]),
                    tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_compare_baseline_starts_both_models_from_the_pretrained_embedding(lm_run, tmp_path):
    config = finetune_config(lm_run, "train.lr=1e-9")  # the saved weights are the start
    result = compare_baseline(config, tmp_path / "cmp", seeds=1)
    pretrained = load_file(str(lm_run / rundir.WEIGHTS))["embedding.weight"]
    for prefix in ("rnn", "baseline"):
        run = tmp_path / "cmp" / f"{prefix}-seed0"
        assert json.loads((run / rundir.META).read_text())["init_from"]["path"] == str(lm_run.resolve())
        assert (run / rundir.TOKENIZER).read_text() == (lm_run / rundir.TOKENIZER).read_text()
        assert torch.allclose(load_file(str(run / rundir.WEIGHTS))["embedding.weight"], pretrained, atol=1e-6), prefix
    assert set(result["models"]) == {"rnn", "per_word_linear"} and "probe_flip_rate" in result["models"]["rnn"]["mean"]


def test_warmup_linear_rises_over_the_warmup_steps_then_falls_linearly_to_zero():
    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.lr=0.01", "train.schedule=warmup_linear",
                                                          "train.warmup_steps=3", "train.epochs=2"])
    model = build_model(config.model, 50, 2, 24)
    optimizer = build_optimizer(model, config.train)
    scheduler = build_scheduler(optimizer, config.train, steps_per_epoch=5)  # 10 steps in all
    rates = []
    for _ in range(11):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 * f for f in (1 / 4, 2 / 4, 3 / 4, 7 / 7, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0)]
    assert rates == pytest.approx(expected)


def test_train_with_warmup_linear_ends_at_a_zero_rate_and_saves_the_schedule(tmp_path):
    from sentiment_rnn import checkpoint

    run = tmp_path / "run"
    train(load_config(ROOT / "configs" / "tiny.yaml", ["train.schedule=warmup_linear", "train.warmup_steps=2",
                                                       "train.epochs=1", "train.max_steps=4"]), run)
    final = checkpoint.read(run / checkpoint.FINAL)
    assert final["scheduler"]["last_epoch"] == 4  # stepped once per batch
    assert [group["lr"] for group in final["optimizer"]["param_groups"]] == [0.0, 0.0]  # decayed to zero at the end
