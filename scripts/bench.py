"""Speed and memory of sentiment-rnn, each figure a ratio against a reference measured side by side.

    python scripts/bench.py                  # every figure at full size (about 12 minutes on 2 idle cores)
    python scripts/bench.py --quick          # the same figures on small sizes, a few minutes
    python scripts/bench.py --only tokenization,cold-start

The machine may be shared and noisy, so nothing is compared with a number measured elsewhere: product
and reference run in the same process (or alternate as subprocesses) with the same torch threads.

- training: tokens/s of the config's model against a straightforward correct reference (Python regex
  tokenization, every batch padded to the longest sentence of the whole dataset, pack_padded_sequence
  for the final states, plain shuffled batches), same sizes, seeds (--seeds, default 3), epochs and early
  stopping (the config's; --epochs N for a fixed number); test accuracy of both as the mean over the
  seeds, since one seed alone moves it by about 2 points, and each side's training-loop seconds.
- inference: sentences/s from raw text to probabilities at batch 256, same two models; the product in fp32
  and with --precision bf16, whose agreement with fp32 (labels, probabilities, test accuracy) is printed.
- cold-start: wall time of `sentiment-rnn predict "text"` against `python -c "import torch"` (medians).
- tokenization: data.encode on the 25,000 IMDB reviews against re.findall + a dict lookup, and a second
  encode in a new process, which must read the cache (no new cache file).
- rss: peak RSS of `sentiment-rnn train` (one epoch, --max-steps) on a generated 2-million-row CSV
  against the 8,530-row Rotten Tomatoes data; the CSV is generated once into the temp folder.
- threads: training tokens/s and inference sentences/s with 1 against 2 intra-op threads.
- explain: wall time of `sentiment-rnn explain "text"` (one sentence) against `sentiment-rnn predict "text"`
  (medians, interleaved).
- onnx: the run exported to ONNX (sentiment-rnn export). Cold start of `sentiment-rnn predict` on the
  export against `python -c "import torch"` (medians); sentences/s of onnxruntime against torch fp32 on
  the 8,530 Rotten Tomatoes sentences (batch 256, best of 3, interleaved), with label agreement and the
  max probability difference; then that difference for tiny trained runs of every recurrence (rnn, gru,
  lstm, one- and bidirectional, the cells encoder) on the same 8,530 sentences.
- quantize: `export --quantize` (int8 dynamic quantization) against the fp32 export of the same run, side by
  side: model.onnx size, sentences/s on the 8,530 Rotten Tomatoes sentences (batch 256, best of 3,
  interleaved), and the share of labels the int8 graph gives equal to fp32's, with the max probability
  difference.
- pretrain-lm: tokens/s of pretrain-lm's training step (configs/lm.yaml's model and sizes, adaptive
  softmax, AdamW) on Zipf-distributed token ids against the bare matmuls of the same shapes (each forward
  matmul and its two backward ones, at the cluster sizes the same ids fill); then the same step with a
  full nn.Linear softmax over the vocabulary. Tokens per CPU-second are printed too: on a shared machine
  they say more about an idle core than tokens per wall second.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "sentiment-rnn-bench"  # the generated CSV survives between runs
# datasets' cache: cold for every run of this script; the --encode-again child reuses its parent's.
CACHE = Path(os.environ.get("BENCH_HF_CACHE") or tempfile.mkdtemp(prefix="bench-hf-"))
os.environ["HF_DATASETS_CACHE"] = str(CACHE)  # before datasets is imported

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from sentiment_rnn import data as data_lib  # noqa: E402
from sentiment_rnn.config import DataConfig, TokenizerConfig, load_config  # noqa: E402
from sentiment_rnn.models.rnn import RNN_LAYERS  # noqa: E402
from sentiment_rnn.runtime import default_threads  # noqa: E402
from sentiment_rnn.tokenizer import train_tokenizer  # noqa: E402
from sentiment_rnn.train import train as train_product  # noqa: E402

SECTIONS = ("training", "inference", "cold-start", "tokenization", "rss", "threads", "explain", "onnx", "quantize",
            "pretrain-lm")
RESULTS: list[dict] = []


def report(
    name: str, product: float, reference: float, unit: str, bar: str, passed: bool | None, note: str = ""
) -> None:
    ratio = product / reference
    verdict = "" if passed is None else ("PASS" if passed else "FAIL")
    RESULTS.append({"figure": name, "product": product, "reference": reference, "ratio": ratio, "unit": unit,
                    "bar": bar, "verdict": verdict, "note": note})
    print(f"{name:34s} {product:>12,.2f} vs {reference:>12,.2f} {unit:13s} = {ratio:6.2f}x  {bar:11s} {verdict}"
          f"{'  ' + note if note else ''}", flush=True)


# ---------------------------------------------------------------------------------------------- reference
TOKEN = re.compile(r"\w+|[^\w\s]+")  # what the product's Whitespace pre-tokenizer splits on
LINE_BREAK = re.compile(r"<br\s*/?>")  # and what its normalizer removes


def regex_tokens(text: str) -> list[str]:
    return TOKEN.findall(LINE_BREAK.sub(" ", text).lower())


class RegexVocab:
    """[PAD]=0, [UNK]=1, then the most frequent training words seen at least min_frequency times."""

    def __init__(self, texts: list[str], cfg: TokenizerConfig):
        counts = Counter(w for t in texts for w in regex_tokens(t))
        kept = [w for w, c in counts.most_common(cfg.max_vocab - 2) if c >= cfg.min_frequency]
        self.ids = {w: i for i, w in enumerate(kept, start=2)}

    def __len__(self) -> int:
        return len(self.ids) + 2

    def encode(self, text: str, max_length: int) -> list[int]:
        return [self.ids.get(w, 1) for w in regex_tokens(text)][:max_length] or [1]


class ReferenceRNN(nn.Module):
    """Embedding -> nn.RNN over a packed batch -> top layer's h_n -> linear: the textbook way."""

    def __init__(self, vocab_size: int, num_classes: int, cfg):
        super().__init__()
        kwargs = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)
        self.rnn = RNN_LAYERS[cfg.cell](cfg.embedding_dim, cfg.hidden_size, cfg.num_layers,
                                        bidirectional=cfg.bidirectional,
                                        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0, **kwargs)
        self.directions = 2 if cfg.bidirectional else 1
        self.head_dropout = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(cfg.hidden_size * self.directions, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding_dropout(self.embedding(input_ids))  # [L, B, E], L = longest sentence of the dataset
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # [layers * directions, B, H] (LSTM: (h_n, c_n))
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n
        final = torch.cat(list(h_n[-self.directions:]), dim=1)  # [B, directions * H]: the top layer's
        return self.head(self.head_dropout(final))  # [B, C]


def padded(vocab: RegexVocab, texts: list[str], max_length: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[width, N] ids padded to `width`, and [N] lengths."""
    seqs = [vocab.encode(t, max_length) for t in texts]
    ids = torch.zeros(width, len(seqs), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[: len(s), j] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


@torch.no_grad()
def reference_scores(model: ReferenceRNN, ids: torch.Tensor, lengths: torch.Tensor,
                     labels: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = torch.cat([model(ids[:, i:i + 256], lengths[i:i + 256]) for i in range(0, len(labels), 256)])
    return (logits.argmax(-1) == labels).float().mean().item(), nn.functional.cross_entropy(logits, labels).item()


def train_reference(cfg) -> dict:
    """The same model sizes, AdamW settings, clipping, epochs, early stopping (train.patience) and
    best-validation-epoch choice as the product; the optimizer is torch's plain AdamW, as a straightforward
    loop would write it (the product's is fused)."""
    splits = data_lib.load_splits(cfg.data, cfg.seed)  # the very same rows
    texts = {k: getattr(splits, k).with_format("arrow")[:]["text"].to_pylist() for k in ("train", "validation", "test")}
    labels = {k: torch.tensor(data_lib.column_numpy(getattr(splits, k), "label"), dtype=torch.long) for k in texts}
    vocab = RegexVocab(texts["train"], cfg.tokenizer)
    longest = max(len(vocab.encode(t, cfg.data.max_length)) for part in texts.values() for t in part)
    tensors = {k: padded(vocab, texts[k], cfg.data.max_length, longest) for k in texts}
    torch.manual_seed(cfg.seed)
    model = ReferenceRNN(len(vocab), len(splits.label_names), cfg.model)
    decay = {n for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith("embedding")}
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": cfg.train.weight_decay},
         {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}], lr=cfg.train.lr)
    ids, lengths = tensors["train"]
    dataset = torch.utils.data.TensorDataset(ids.T, lengths, labels["train"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True)
    seconds, tokens, best, stale = 0.0, 0, (-1.0, 0.0, None), 0
    for _ in range(cfg.train.epochs):
        model.train()
        start = time.perf_counter()
        for x, n, y in loader:
            loss = nn.functional.cross_entropy(model(x.T, n), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm or float("inf"))
            optimizer.step()
            tokens += int(n.sum())
        seconds += time.perf_counter() - start
        acc, loss = reference_scores(model, *tensors["validation"], labels["validation"])
        if (acc, -loss) > best[:2]:
            best, stale = (acc, -loss, {k: v.clone() for k, v in model.state_dict().items()}), 0
        else:
            stale += 1
            if stale >= cfg.train.patience:
                break
    model.load_state_dict(best[2])
    test_acc, _ = reference_scores(model, *tensors["test"], labels["test"])
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "test_accuracy": test_acc, "model": model,
            "vocab": vocab, "longest": longest, "texts": texts["train"] + texts["validation"] + texts["test"]}


# ---------------------------------------------------------------------------------------------- sections
def bench_training(args, threads: int, show: bool = True) -> tuple[Path, dict]:
    """Product and reference trained with the same seeds; speed and test accuracy compared on their means.

    One seed's test accuracy moves by about 2 points with the seed alone, so a single pair of runs
    cannot show accuracy "within 1 point"; the means over --seeds runs can (their spread is printed).
    """
    base = args.overrides + [f"train.threads={threads}"]
    if args.epochs:  # a fixed number of epochs, no early stopping, on both sides
        base += [f"train.epochs={args.epochs}", f"train.patience={args.epochs}"]
    if args.limit:
        base.append(f"data.limit={args.limit}")
    speeds: dict[str, list[float]] = {"product": [], "reference": []}
    seconds: dict[str, list[float]] = {"product": [], "reference": []}
    accuracies: dict[str, list[float]] = {"product": [], "reference": []}
    kept = None
    for seed in range(args.seeds):
        cfg = load_config(args.config, base + [f"seed={seed}"])
        run = WORK / f"run-seed{seed}"
        metrics = train_product(cfg, run, overwrite=True)
        torch.set_num_threads(threads)
        ref = train_reference(cfg)
        seconds["product"].append(metrics["train_seconds"])
        seconds["reference"].append(ref["seconds"])
        speeds["product"].append(metrics["tokens_per_s"])
        speeds["reference"].append(ref["tokens_per_s"])
        accuracies["product"].append(metrics["test"]["accuracy"] * 100)
        accuracies["reference"].append(ref["test_accuracy"] * 100)
        kept = kept or (run, ref)  # seed 0's pair serves the inference and cold-start sections
    if not show:
        return kept
    product_acc, ref_acc = (statistics.mean(accuracies[k]) for k in ("product", "reference"))
    spread = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in accuracies.items()}
    diff = abs(product_acc - ref_acc)
    product_speed, ref_speed = statistics.mean(speeds["product"]), statistics.mean(speeds["reference"])
    report("training tokens/s", product_speed, ref_speed, "tokens/s", ">= 3x", product_speed >= 3 * ref_speed,
           f"test accuracy, mean of {args.seeds} seed(s): {product_acc:.1f} +- {spread['product']:.1f} vs "
           f"{ref_acc:.1f} +- {spread['reference']:.1f} "
           f"(diff {diff:.1f} pt, bar <= 1: {'PASS' if diff <= 1 else 'FAIL'}); "
           f"per seed {[round(a, 1) for a in accuracies['product']]} "
           f"vs {[round(a, 1) for a in accuracies['reference']]}; "
           f"training loop {statistics.mean(seconds['product']):.1f} s "
           f"vs {statistics.mean(seconds['reference']):.1f} s "
           f"per seed; {f'{args.epochs} epochs' if args.epochs else 'the config epochs and early stopping'}, "
           f"{threads} thread(s), reference padded to {kept[1]['longest']}")
    return kept


def bench_inference(run: Path, ref: dict, threads: int) -> None:
    """The product in fp32 (as trained) and with --precision bf16 against the reference, each timed three
    times, interleaved, best of three; then how far bf16 moves the probabilities and the test accuracy."""
    from sentiment_rnn.evaluate import evaluate_run
    from sentiment_rnn.predict import Predictor
    from sentiment_rnn.runtime import native_bf16

    texts = ref["texts"]
    product = {precision: Predictor.from_dir(run, threads=threads, precision=precision)
               for precision in ("fp32", "bf16")}
    model, vocab, longest = ref["model"].eval(), ref["vocab"], ref["longest"]
    max_length = int(product["fp32"].max_length)

    @torch.inference_mode()
    def reference(batch: list[str]) -> torch.Tensor:
        return torch.cat([model(*padded(vocab, batch[i:i + 256], max_length, longest)).softmax(-1)
                          for i in range(0, len(batch), 256)])

    sides = {"fp32": product["fp32"].probabilities, "bf16": product["bf16"].probabilities, "reference": reference}
    for predictor in product.values():
        predictor.batch_size = 256
    for side in sides.values():
        side(texts[:256])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(3):
        for name, side in sides.items():
            start = time.perf_counter()
            side(texts)
            seconds[name].append(time.perf_counter() - start)
    rate = {name: len(texts) / min(times) for name, times in seconds.items()}
    report("inference sentences/s (batch 256)", rate["fp32"], rate["reference"], "sentences/s", ">= 3x",
           rate["fp32"] >= 3 * rate["reference"],
           f"{len(texts):,} sentences, raw text to probabilities, fp32, best of 3")
    p32, p16 = product["fp32"].probabilities(texts), product["bf16"].probabilities(texts)
    agree = (p32.argmax(1) == p16.argmax(1)).float().mean().item()
    acc32, acc16 = (evaluate_run(run, precision=precision)["accuracy"] for precision in ("fp32", "bf16"))
    report("inference, --precision bf16", rate["bf16"], rate["reference"], "sentences/s", ">= 3x",
           rate["bf16"] >= 3 * rate["reference"],
           f"native bf16: {native_bf16()}; labels equal to fp32's for {agree:.2%} of sentences, max |dP| "
           f"{(p32 - p16).abs().max().item():.3f}; test accuracy {acc16:.2%} vs {acc32:.2%} in fp32")


def bench_cold_start(run: Path, repeats: int) -> None:
    script = Path(sys.executable).with_name("sentiment-rnn")
    predict = [str(script) if script.exists() else shutil.which("sentiment-rnn"), "predict",
               "a gripping, beautifully acted film", "--model", str(run)]
    bare = [sys.executable, "-c", "import torch"]
    # predict imports torch with the garbage collector paused; the same for the bare import, for comparison
    paused = [sys.executable, "-c", "import gc; gc.disable(); import torch"]
    times: dict[str, list[float]] = {"predict": [], "torch": [], "paused": []}
    for _ in range(repeats):  # interleaved, so all see the same machine load
        for name, cmd in (("predict", predict), ("torch", bare), ("paused", paused)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    p, t = statistics.median(times["predict"]), statistics.median(times["torch"])
    report("predict cold start (s)", p, t, "s", "<= 1.3x", p <= 1.3 * t,
           f"medians of {repeats}; predict {[f'{x:.2f}' for x in times['predict']]}, "
           f"import torch {[f'{x:.2f}' for x in times['torch']]}; import torch with gc disabled: median "
           f"{statistics.median(times['paused']):.2f} s ({p / statistics.median(times['paused']):.2f}x)")


def bench_explain(run: Path, repeats: int) -> None:
    """One sentence through `explain` (running reading, integrated gradients, occlusion) against `predict`."""
    script = Path(sys.executable).with_name("sentiment-rnn")
    cli = str(script) if script.exists() else shutil.which("sentiment-rnn")
    text = "i do not think the flower is beautiful"
    commands = {name: [cli, name, text, "--model", str(run)] for name in ("explain", "predict")}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    e, p = statistics.median(times["explain"]), statistics.median(times["predict"])
    report("explain cold start (s)", e, p, "s", "<= 1.5x", e <= 1.5 * p,
           f"vs predict; medians of {repeats}; explain {[f'{x:.2f}' for x in times['explain']]}, "
           f"predict {[f'{x:.2f}' for x in times['predict']]}")


def cache_files() -> set[str]:
    return {str(p) for p in CACHE.rglob("*.arrow")}


def imdb_and_tokenizer(tokenizer_path: Path | None = None):
    ds, _ = data_lib.load_eval_data(DataConfig(source="imdb"), "train", data_lib.EMBEDDED_LABELS)
    if tokenizer_path is not None:
        from sentiment_rnn.tokenizer import load_tokenizer

        return ds, load_tokenizer(tokenizer_path)
    texts = (b["text"] for b in ds.select_columns(["text"]).iter(batch_size=1000))
    return ds, train_tokenizer(texts, TokenizerConfig(max_vocab=30_000))


def encode_again(tokenizer_path: str, max_length: int) -> None:
    """Child process of bench_tokenization: a second run, in a new process, of the same encode."""
    ds, tokenizer = imdb_and_tokenizer(Path(tokenizer_path))
    before = cache_files()
    start = time.perf_counter()
    data_lib.encode(ds, tokenizer, max_length)
    print(json.dumps({"seconds": time.perf_counter() - start, "new_files": len(cache_files() - before)}))


def bench_tokenization(max_lengths: list[int]) -> None:
    ds, tokenizer = imdb_and_tokenizer()
    tokenizer_path = WORK / "imdb-tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    texts = ds.with_format("arrow")[:]["text"].to_pylist()
    vocab = tokenizer.get_vocab()
    for max_length in max_lengths:
        start = time.perf_counter()
        reference = [[vocab.get(w, 1) for w in regex_tokens(t)][:max_length] or [1] for t in texts]
        regex_seconds = time.perf_counter() - start
        before = cache_files()
        start = time.perf_counter()
        encoded = data_lib.encode(ds, tokenizer, max_length)
        seconds = time.perf_counter() - start
        written = len(cache_files() - before)
        ids = encoded.with_format("arrow")[:]["input_ids"].to_pylist()
        same = sum(r == list(e) for r, e in zip(reference, ids, strict=True))
        child = subprocess.run([sys.executable, __file__, "--encode-again", str(tokenizer_path), str(max_length)],
                               check=True, capture_output=True, text=True,
                               env={**os.environ, "BENCH_HF_CACHE": str(CACHE)})
        again = json.loads(child.stdout.strip().splitlines()[-1])
        cached = again["new_files"] == 0 and written >= 1
        report(f"tokenization 25k IMDB, max_length {max_length}", len(texts) / seconds, len(texts) / regex_seconds,
               "reviews/s", ">= 1x", seconds <= regex_seconds and cached,
               f"encode {seconds:.2f}s (wrote {written} cache file), regex {regex_seconds:.2f}s; second run in a new "
               f"process {again['seconds']:.3f}s, {again['new_files']} new cache files; ids equal to the regex's "
               f"for {same / len(texts):.2%} of reviews")


def generated_csv(rows: int) -> Path:
    """Rows sampled (seeded) from the embedded Rotten Tomatoes sentences; written once, reused after."""
    path = WORK / f"reviews-{rows}.csv"
    if path.is_file():
        return path
    with data_lib.embedded_csv().open(encoding="utf-8", newline="") as fh:
        pool = [(r["text"], r["label"]) for r in csv.DictReader(fh) if r["source"] == "rotten_tomatoes"]
    rng = random.Random(0)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            writer.writerow(pool[rng.randrange(len(pool))])
    tmp.replace(path)
    return path


# Runs the command and reports its peak RSS (wait4) and peak anonymous RSS (sampled every 50 ms). It runs as
# a separate small process: on Linux a child's ru_maxrss starts from the RSS of the process that forked it,
# so a command forked straight from this (large) benchmark process would report this process's size.
MEASURE = """
import json, os, subprocess, sys, tempfile, time
err = tempfile.TemporaryFile()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=err)
anon = 0
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaps the command itself: its own rusage
    if pid:
        break
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            anon = max([anon] + [int(line.split()[1]) for line in fh if line.startswith("RssAnon:")])
    except OSError:
        pass
    time.sleep(0.05)
proc.returncode = os.waitstatus_to_exitcode(status)
err.seek(0)
print(json.dumps({"rc": proc.returncode, "maxrss_kib": usage.ru_maxrss, "anon_kib": anon,
                  "err": err.read().decode(errors="replace")[-2000:]}))
"""


def peak_rss_of_train(source: str, max_steps: int) -> tuple[float, float]:
    """(peak RSS, peak anonymous RSS) of one cold `sentiment-rnn train`, in MiB."""
    script = Path(sys.executable).with_name("sentiment-rnn")
    out = Path(tempfile.mkdtemp(prefix="bench-run-", dir=WORK))
    env = {**os.environ, "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="bench-hf-", dir=WORK)}  # cold, like a first run
    cmd = [str(script), "train", "--config", str(ROOT / "configs" / "default.yaml"), "--set", f"data.source={source}",
           "--set", "train.epochs=1", "--set", f"train.max_steps={max_steps}", "--set", "train.threads=1",
           "--output", str(out), "--overwrite"]
    measured = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True,
                              check=True)
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(env["HF_DATASETS_CACHE"], ignore_errors=True)
    if result["rc"] != 0:
        raise SystemExit(f"train on {source} failed: {result['err']}")
    return result["maxrss_kib"] / 1024, result["anon_kib"] / 1024  # Linux reports KiB


def bench_rss(rows: int, max_steps: int) -> None:
    big = generated_csv(rows)
    small_rss, small_anon = peak_rss_of_train("rotten_tomatoes", max_steps)
    big_rss, big_anon = peak_rss_of_train(str(big), max_steps)
    report(f"peak RSS train, {rows:,} rows (MiB)", big_rss, small_rss, "MiB", "<= 1.5x", big_rss <= 1.5 * small_rss,
           f"vs 8,530 rows; anonymous memory alone {big_anon:,.0f} vs {small_anon:,.0f} MiB; 1 epoch, "
           f"max_steps {max_steps}, cold datasets cache")


def bench_threads(args, run: Path) -> None:
    from sentiment_rnn.predict import Predictor

    overrides = args.overrides + ["train.epochs=1", "train.grad_probe_epochs=[]"]
    overrides += [f"data.limit={args.limit}"] if args.limit else []
    speeds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(2):
        for threads in (1, 2):
            cfg = load_config(args.config, overrides + [f"train.threads={threads}"])
            speeds[threads].append(train_product(cfg, WORK / "threads-run", overwrite=True)["tokens_per_s"])
    one, two = statistics.median(speeds[1]), statistics.median(speeds[2])
    report("training, 1 thread vs 2", one, two, "tokens/s", "info", None,
           f"default here: {default_threads()} thread(s); runs {speeds}")
    texts = rotten_tomatoes_texts()[: 4096]
    rates = {}
    for threads in (1, 2):
        predictor = Predictor.from_dir(run, threads=threads)
        predictor.probabilities(texts[:256])
        start = time.perf_counter()
        predictor.probabilities(texts)
        rates[threads] = len(texts) / (time.perf_counter() - start)
    report("inference, 1 thread vs 2", rates[1], rates[2], "sentences/s", "info", None, "batch 256")


PARITY_RUNS = {  # tiny trained runs (configs/tiny.yaml) of every recurrence the export carries
    "rnn": [], "rnn, bidirectional": ["model.bidirectional=true"],
    "gru": ["model.cell=gru"], "gru, bidirectional": ["model.cell=gru", "model.bidirectional=true"],
    "lstm": ["model.cell=lstm"], "lstm, bidirectional": ["model.cell=lstm", "model.bidirectional=true"],
    "cells lstm": ["model.encoder=cells", "model.cell=lstm"],
    "cells gru, bidirectional": ["model.encoder=cells", "model.cell=gru", "model.bidirectional=true"],
}


def onnx_vs_torch(run: Path, texts: list[str], threads: int) -> tuple[float, float]:
    """(max |P_onnx - P_torch|, share of equal labels) on texts, each side batching at 256."""
    from sentiment_rnn.export import export_run
    from sentiment_rnn.onnx_backend import OnnxPredictor
    from sentiment_rnn.predict import Predictor

    export_run(run, run / "onnx", overwrite=True)
    p_torch = Predictor.from_dir(run, threads=threads).probabilities(texts).numpy()
    p_onnx = OnnxPredictor.load(run / "onnx", threads=threads).probabilities(texts)
    return float(abs(p_torch - p_onnx).max()), float((p_torch.argmax(1) == p_onnx.argmax(1)).mean())


def bench_onnx(run: Path, threads: int, repeats: int, quick: bool) -> None:
    """Cold start and throughput of the export against torch, and parity on the 8,530 RT sentences."""
    from sentiment_rnn.onnx_backend import OnnxPredictor
    from sentiment_rnn.predict import Predictor

    texts = rotten_tomatoes_texts()
    diff, agree = onnx_vs_torch(run, texts, threads)
    export = run / "onnx"
    script = Path(sys.executable).with_name("sentiment-rnn")
    predict = [str(script) if script.exists() else shutil.which("sentiment-rnn"), "predict",
               "a gripping, beautifully acted film", "--model", str(export)]
    bare = [sys.executable, "-c", "import torch"]
    times: dict[str, list[float]] = {"onnx": [], "torch": []}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for name, cmd in (("onnx", predict), ("torch", bare)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    o, t = statistics.median(times["onnx"]), statistics.median(times["torch"])
    report("onnx predict cold start (s)", o, t, "s", "<= 0.35x", o <= 0.35 * t,
           f"medians of {repeats}; predict on the export {[f'{x:.2f}' for x in times['onnx']]}, "
           f"import torch {[f'{x:.2f}' for x in times['torch']]}")
    sides = {"onnx": OnnxPredictor.load(export, threads=threads), "torch": Predictor.from_dir(run, threads=threads)}
    for side in sides.values():
        side.batch_size = 256
        side.probabilities(texts[:256])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(3):
        for name, side in sides.items():
            start = time.perf_counter()
            side.probabilities(texts)
            seconds[name].append(time.perf_counter() - start)
    rate = {name: len(texts) / min(times) for name, times in seconds.items()}
    report("onnx sentences/s vs torch fp32", rate["onnx"], rate["torch"], "sentences/s", ">= 1x",
           rate["onnx"] >= rate["torch"], f"{len(texts):,} sentences, batch 256, best of 3, {threads} thread(s); "
           f"labels equal for {agree:.2%} (bar 100%: {'PASS' if agree == 1.0 else 'FAIL'}), max |dP| {diff:.1e}")
    names = list(PARITY_RUNS)[:2] if quick else list(PARITY_RUNS)
    worst: dict[str, float] = {}
    for name in names:
        cfg = load_config(ROOT / "configs" / "tiny.yaml", PARITY_RUNS[name] + ["data.max_length=64"])
        parity_run = WORK / f"parity-{name.replace(', ', '-').replace(' ', '-')}"
        train_product(cfg, parity_run, overwrite=True)
        worst[name], _ = onnx_vs_torch(parity_run, texts, threads)
    largest = max(worst.values())
    report("onnx parity, max |dP| (8,530 RT)", largest, 1e-5, "probability", "<= 1x", largest <= 1e-5,
           "tiny trained runs (configs/tiny.yaml, max_length 64): "
           + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


def bench_quantize(run: Path, threads: int) -> None:
    """The int8 export against the fp32 one: size, sentences/s and label agreement on the 8,530 RT sentences."""
    from sentiment_rnn.export import export_run
    from sentiment_rnn.onnx_backend import MODEL, OnnxPredictor

    texts = rotten_tomatoes_texts()
    exports = {"int8": run / "onnx-int8", "fp32": run / "onnx"}
    for name, path in exports.items():
        export_run(run, path, overwrite=True, quantize=name == "int8")
    sides = {name: OnnxPredictor.load(path, threads=threads) for name, path in exports.items()}
    probs, seconds = {}, {name: [] for name in sides}
    for _ in range(3):  # interleaved, so both see the same machine load
        for name, side in sides.items():
            start = time.perf_counter()
            probs[name] = side.probabilities(texts)
            seconds[name].append(time.perf_counter() - start)
    size = {name: (path / MODEL).stat().st_size / 1e6 for name, path in exports.items()}
    report("int8 export size (MB)", size["int8"], size["fp32"], "MB", "<= 0.5x", size["int8"] <= 0.5 * size["fp32"])
    rate = {name: len(texts) / min(times) for name, times in seconds.items()}
    agree = float((probs["int8"].argmax(1) == probs["fp32"].argmax(1)).mean())
    report("int8 export sentences/s vs fp32", rate["int8"], rate["fp32"], "sentences/s", ">= 1x",
           rate["int8"] >= rate["fp32"], f"{len(texts):,} sentences, batch 256, best of 3, {threads} thread(s); "
           f"labels equal to fp32's for {agree:.2%} (bar >= 99%: {'PASS' if agree >= 0.99 else 'FAIL'}), "
           f"max |dP| {abs(probs['int8'] - probs['fp32']).max():.1e}")


# ---------------------------------------------------------------------------------------------- pretrain-lm
def zipf_ids(vocab: int, count: int) -> torch.Tensor:
    """Token ids whose frequency falls with their rank, as in the LM tokenizer's vocabulary (ids 3.. by frequency)."""
    probs = 1.0 / torch.arange(1, vocab - 2, dtype=torch.float)
    return torch.multinomial(probs, count, replacement=True) + 3


def time_lm_steps(model, head, ids: torch.Tensor, bptt: int, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds of `steps` training steps (after 2 warm-up steps), state carried as pretrain-lm does."""
    from sentiment_rnn.lm.model import detach

    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    hidden = None
    for step in range(steps + 2):
        if step == 2:
            wall, cpu = time.perf_counter(), time.process_time()
        inputs, targets = ids[step * bptt:(step + 1) * bptt], ids[step * bptt + 1:(step + 1) * bptt + 1]  # [T, B]
        if head is None:
            loss, _, hidden = model.loss(inputs, targets, None if hidden is None else detach(hidden))
        else:  # full softmax: every token scores every word
            out, hidden = model(inputs, None if hidden is None else detach(hidden))  # [T, B, H]
            loss = nn.functional.cross_entropy(head(out.reshape(-1, out.shape[-1])), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def lm_matmul_shapes(cfg, targets: torch.Tensor, cutoffs: list[int]) -> list[tuple[int, int, int, int]]:
    """(repeats, rows, inner, cols) of every matmul in one LM forward pass: LSTM input and recurrent
    projections per layer, the adaptive head, and each tail cluster at the rows its words fill."""
    T, B, E, H = cfg.lm.bptt, cfg.train.batch_size, cfg.model.embedding_dim, cfg.model.hidden_size
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cfg.model.cell] * H
    shapes = []
    for layer in range(cfg.model.num_layers):
        shapes += [(1, T * B, E if layer == 0 else H, gates), (T, B, H, gates)]
    bounds = [*cutoffs, cfg.tokenizer.max_vocab]
    shapes.append((1, T * B, H, cutoffs[0] + len(cutoffs)))
    for i in range(len(cutoffs)):
        rows = int(((targets >= bounds[i]) & (targets < bounds[i + 1])).sum()) // max(1, targets.numel() // (T * B))
        width = int(H // (cfg.lm.div_value ** (i + 1)))
        shapes += [(1, rows, H, width), (1, rows, width, bounds[i + 1] - bounds[i])]
    return shapes


def time_matmuls(shapes: list[tuple[int, int, int, int]], steps: int) -> float:
    """Seconds of `steps` x (each forward matmul and its two backward matmuls), on random tensors."""
    operands = []
    for repeats, rows, inner, cols in shapes:
        a, w, g = torch.randn(max(rows, 1), inner), torch.randn(inner, cols), torch.randn(max(rows, 1), cols)
        operands.append((repeats, a, w, g))
    start = time.perf_counter()
    for _ in range(steps):
        for repeats, a, w, g in operands:
            for _ in range(repeats):
                torch.mm(a, w), torch.mm(g, w.t()), torch.mm(a.t(), g)  # forward, d/dinput, d/dweight
    return time.perf_counter() - start


def bench_pretrain_lm(steps: int) -> None:
    from sentiment_rnn.lm.model import build_language_model

    cfg = load_config(ROOT / "configs" / "lm.yaml")
    vocab, T, B = cfg.tokenizer.max_vocab, cfg.lm.bptt, cfg.train.batch_size
    torch.manual_seed(0)
    ids = zipf_ids(vocab, (steps + 3) * T * B).view(-1, B)  # [N, B]
    model = build_language_model(cfg.model, cfg.lm, vocab)
    wall, cpu = time_lm_steps(model, None, ids, T, steps)
    tokens = steps * T * B
    matmul = time_matmuls(lm_matmul_shapes(cfg, ids, model.head.cutoffs[:-1]), steps)
    shape = f"{cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size}, batch {B}, bptt {T}, vocab {vocab:,}"
    report("pretrain-lm tokens/s", tokens / wall, tokens / matmul, "tokens/s", "info", None,
           f"{shape}; {tokens / cpu:,.0f} tokens per CPU-second; reference: bare matmuls of the same shapes")
    full = nn.Linear(cfg.model.hidden_size, vocab)
    full_wall, full_cpu = time_lm_steps(build_language_model(cfg.model, cfg.lm, vocab), full, ids, T, steps)
    report("pretrain-lm, adaptive vs full softmax", tokens / wall, tokens / full_wall, "tokens/s", "info", None,
           f"full softmax: {tokens / full_cpu:,.0f} tokens per CPU-second")


def rotten_tomatoes_texts() -> list[str]:
    with data_lib.embedded_csv().open(encoding="utf-8", newline="") as fh:
        return [r["text"] for r in csv.DictReader(fh) if r["source"] == "rotten_tomatoes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast check, not the bars' figures")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"),
                        help="config for training/inference")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override KEY=VALUE for training/inference, e.g. --set model.cell=lstm")
    parser.add_argument("--epochs", type=int, help="fixed epochs for product and reference, no early stopping "
                        "(default: the config's epochs and patience; --quick 2)")
    parser.add_argument("--seeds", type=int, help="training seeds for product and reference (default 3; --quick 1)")
    parser.add_argument("--rows", type=int, help="rows of the generated CSV (default 2,000,000; --quick 200,000)")
    parser.add_argument("--threads", type=int, help="intra-op threads for both sides (default: the product's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--encode-again", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encode_again:
        encode_again(args.encode_again[0], int(args.encode_again[1]))
        return
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.epochs = args.epochs or (2 if args.quick else None)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.limit = 2000 if args.quick else None
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    WORK.mkdir(parents=True, exist_ok=True)
    threads = args.threads or default_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {threads} intra-op thread(s) for both sides"
          f"{', QUICK sizes' if args.quick else ''}", flush=True)
    try:
        run = ref = None
        if {"training", "inference", "cold-start", "threads", "explain", "onnx", "quantize"} & set(sections):
            if "training" not in sections:  # the other sections need trained models: train small ones silently
                args.epochs, args.limit, args.seeds = 1, args.limit or 2000, 1
            run, ref = bench_training(args, threads, show="training" in sections)
        if "inference" in sections:
            bench_inference(run, ref, threads)
        if "cold-start" in sections:
            bench_cold_start(run, 3 if args.quick else 7)
        if "tokenization" in sections:
            bench_tokenization([64, 400])
        if "rss" in sections:
            bench_rss(rows, 20 if args.quick else 100)
        if "threads" in sections:
            bench_threads(args, run)
        if "explain" in sections:
            bench_explain(run, 3 if args.quick else 7)
        if "onnx" in sections:
            bench_onnx(run, threads, 3 if args.quick else 7, quick=args.quick)
        if "quantize" in sections:
            bench_quantize(run, threads)
        if "pretrain-lm" in sections:
            bench_pretrain_lm(5 if args.quick else 30)
    finally:
        shutil.rmtree(CACHE, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
