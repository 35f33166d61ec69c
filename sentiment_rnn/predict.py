"""Classify texts with a trained run. Imports only torch, tokenizers and safetensors so it starts fast.

Batch input streams: lines are read in chunks, sorted by length inside a chunk so batches carry little
padding, and written back in input order, one record per input line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from sentiment_rnn import runtime
from sentiment_rnn.records import prediction_records, stream_records
from sentiment_rnn.rundir import LoadedRun, load_run
from sentiment_rnn.tokenizer import encode_ids, pad_lists

CHARS_PER_TOKEN_CAP = 64  # texts are cut at max_length * this many characters before tokenizing
FIRST_BLOCK, BLOCK = 512, 2048  # texts per tokenizer call: a small first one, so the model starts early


class Predictor:
    """A loaded run that turns texts into labels and class probabilities."""

    def __init__(self, run: LoadedRun, batch_size: int = 256, fast: bool = False):
        self.run, self.batch_size = run, batch_size
        self.labels: list[str] = list(run.meta["label_names"])
        self.max_length = int(run.meta["max_length"])
        self.device = next(run.model.parameters()).device
        self.forward = run.model
        if fast:  # the speed opt-in (sentiment_rnn/speed): same probabilities, hand-written CPU kernels
            from sentiment_rnn.speed.rnn import FrozenClassifier

            # Only the vanilla RNN has an inference kernel: its first input matmul becomes a table lookup.
            # The other models keep the plain route, which the unpacked bidirectional route does not beat
            # without a backward pass.
            if FrozenClassifier.applies(run.model):
                self.forward = FrozenClassifier(run.model)

    @classmethod
    def from_dir(cls, model_dir: Path | None, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32", fast: bool = False) -> Predictor:
        """Load a run; intra-op threads as in training: every core, at most 4, unless given.
        precision: fp32 (as trained) or bf16 (faster where the hardware has it; see rundir.load_run).
        fast: the speed opt-in's inference kernel for vanilla RNNs on CPU (sentiment_rnn/speed)."""
        runtime.configure_threads(threads)
        return cls(load_run(model_dir, device, precision), fast=fast)

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """[N, C] class probabilities for non-empty texts, in input order.

        Texts go shortest first (by characters) in blocks. A worker thread tokenizes the next block while
        the model reads this one: the tokenizer and torch both release the GIL, so the two overlap.
        Within a block, batches are cut from the texts sorted by token count, so they carry little padding.
        """
        cap = self.max_length * CHARS_PER_TOKEN_CAP  # a 10 MB line must not cost a 10 MB tokenization
        by_chars = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        blocks = [by_chars[:FIRST_BLOCK]] + [by_chars[s:s + BLOCK] for s in range(FIRST_BLOCK, len(by_chars), BLOCK)]
        out = torch.empty(len(texts), len(self.labels))

        def encode(block: list[int]) -> list[list[int]]:
            return encode_ids(self.run.tokenizer, [texts[i][:cap] for i in block], self.max_length)

        with ThreadPoolExecutor(max_workers=1) as worker:
            pending = worker.submit(encode, blocks[0])
            for k, block in enumerate(blocks):
                ids = pending.result()
                if k + 1 < len(blocks):
                    pending = worker.submit(encode, blocks[k + 1])
                self._score(ids, block, out)
        return out

    def _score(self, ids: list[list[int]], rows: list[int], out: torch.Tensor) -> None:
        """Write the probabilities of texts whose token ids are `ids` into out[rows]."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length buckets: little padding
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            input_ids, lengths = pad_lists([ids[i] for i in chunk])  # [T, B] time-major, [B]
            input_ids, lengths = torch.from_numpy(input_ids).to(self.device), torch.from_numpy(lengths).to(self.device)
            out[[rows[i] for i in chunk]] = self.forward(input_ids, lengths).float().softmax(-1).cpu()  # [B, C]

    def predict(self, texts: list[str]) -> list[dict]:
        """One record per text: label and probabilities, or an error for an empty text."""
        return prediction_records(texts, self.labels, self.probabilities)

    def stream(self, lines: Iterable[str], chunk_size: int = 4096) -> Iterator[dict]:
        """Predictions for any number of lines with flat memory: one chunk in flight at a time."""
        return stream_records(self.predict, lines, chunk_size)
