"""explain: how a trained classifier's verdict forms while it reads a text, word by word.

For each text, three readings, each signed toward the target class (`positive` where the run has it):

- the running reading: P(target) from the model's own head after words 1..t, "what it would say if the
  text stopped here". A one-directional RNN's top layer already holds that state at every step, so one
  forward pass gives all of them. A bidirectional encoder's state at t has read the words after t too, so
  instead every prefix 1..t is re-read by the whole model (one batch); the per-word linear baseline,
  which has no state, gets the same prefix re-read;
- integrated gradients on the embedding layer (Captum's LayerIntegratedGradients), from the [PAD]
  embedding (a zero vector) at every position to the text's own word vectors;
- occlusion: P(target) of the whole text minus P(target) of the text re-read with that word removed.

The per-word linear baseline adds its exact per-position contributions: each position's own linear layer
output times its weights in the final layer; they sum, with the head's bias, to the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from sentiment_rnn import runtime
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models.baseline import PER_POSITION_OUT, PerWordLinear
from sentiment_rnn.models.rnn import RNNClassifier
from sentiment_rnn.probe import README_PAIR as PROBE_README_PAIR
from sentiment_rnn.rundir import LoadedRun, load_run
from sentiment_rnn.tokenizer import UNK

README_PAIR = (PROBE_README_PAIR.first_text, PROBE_README_PAIR.second_text)
IG_STEPS = 50  # Captum's default; the record's convergence delta says how far the sum is from exact
READINGS = {
    "top_layer": "the top layer's output after each word, through the head (one forward pass)",
    "prefix": "each prefix of words 1..t re-read by the whole model, as if the text stopped there",
}


def model_kind(model: nn.Module) -> str:
    """'rnn' or 'per_word_linear'; any other model is an error naming what explain understands."""
    if isinstance(model, PerWordLinear):
        return "per_word_linear"
    if (isinstance(model, RNNClassifier) and isinstance(model.head, nn.Linear)
            and isinstance(model.embedding, nn.Embedding)):
        return "rnn"
    raise SentimentRNNError(
        f"explain does not understand a {type(model).__name__} model; it reads runs of model.kind 'rnn' "
        "(an embedding, a recurrent encoder and a linear head) and 'per_word_linear'; train one of those")


def reading_method(model: nn.Module) -> str:
    """'top_layer' for a one-directional RNN, whose output at t has read words 1..t only; else 'prefix'."""
    one_way = model_kind(model) == "rnn" and getattr(model.encoder, "bidirectional", True) is False
    last = getattr(model, "pooling", "last") == "last"  # a pooled head reads every step, not the state at t alone
    return "top_layer" if one_way and last else "prefix"


def logits_from_embedded(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The model's forward from its embedding layer's output x [T, B, E] on: logits [B, C].

    Integrated gradients scale the embedding layer's output, so the rest of the forward pass has to run
    from there; tests/test_explain.py pins this to model(input_ids, lengths).
    """
    if model_kind(model) == "per_word_linear":
        return baseline_parts(model, x)[0]
    x = model.embedding_dropout(x)  # [T, B, E]
    out, final = model.encoder(x, lengths)  # [T, B, D*H], [B, D*H]: the state at each text's last real token
    return model.head(model.head_dropout(model.pool(out, final, lengths)))  # [B, C]


def baseline_parts(model: PerWordLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline from embedded words x [T, B, E]: logits [B, C] and each position's share [B, L, C].

    logits = head.bias + the shares summed over all L positions, padding included: exact, not estimated.
    """
    length, batch = model.max_length, x.shape[1]
    x = x[:length]  # [<=L, B, E]
    pad = model.embedding.weight[0].expand(length - x.shape[0], batch, -1)  # [L-T, B, E]: [PAD] as the model pads
    x = model.embedding_dropout(torch.cat([x, pad]))  # [L, B, E]
    per_position = torch.einsum("lbe,leo->blo", x, model.position_weight) + model.position_bias  # [B, L, 2]
    per_position = model.head_dropout(per_position)
    weight = model.head.weight.view(-1, length, PER_POSITION_OUT)  # [C, L, 2], matching flatten(1)'s order
    shares = torch.einsum("blo,clo->blc", per_position, weight)  # [B, L, C]
    return model.head(per_position.flatten(1)), shares  # [B, C], [B, L, C]


def running_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits [T, C] after reading words 1..t, for ids [T] of one text (see the module docstring)."""
    steps = ids.shape[0]
    if reading_method(model) == "top_layer":
        x = model.embedding_dropout(model.embedding(ids.view(steps, 1)))  # [T, 1, E]
        out, _ = model.encoder(x, torch.tensor([steps]))  # [T, 1, H]: the top layer's output at every step
        return model.head(model.head_dropout(out[:, 0]))  # [T, C]
    positions = torch.arange(steps).view(-1, 1)  # [T, 1]
    prefixes = torch.where(positions <= positions.T, ids.view(-1, 1), 0)  # [T, T]: column j = words 0..j, then [PAD]
    return model(prefixes, torch.arange(1, steps + 1))  # [T, C]


def integrated_gradients(model: nn.Module, ids: torch.Tensor, target: int, steps: int = IG_STEPS) -> dict:
    """Captum's LayerIntegratedGradients of P(target) on the embedding layer, summed per word.

    Captum stacks the interpolated embeddings along dim 0, so the function it calls takes batch-first
    ids [B, T] and embeds them batch-first; the model itself is time-major.
    """
    def probabilities(ids_bt: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = model.embedding(ids_bt).transpose(0, 1)  # [B, T, E] -> [T, B, E]
        return logits_from_embedded(model, x, lengths).softmax(-1)  # [B, C]

    inputs = ids.view(1, -1)  # [1, T]
    baselines = torch.zeros_like(inputs)  # [PAD] at every position: its embedding row is zero
    with torch.enable_grad():
        attributions, delta = LayerIntegratedGradients(probabilities, model.embedding).attribute(
            inputs, baselines, target=target, additional_forward_args=(torch.tensor([ids.shape[0]]),),
            n_steps=steps, return_convergence_delta=True)  # [1, T, E], [1]
    with torch.no_grad():
        at_baseline = probabilities(baselines, torch.tensor([ids.shape[0]]))[0, target].item()
    per_word = attributions.sum(-1)[0].detach()  # [T]
    return {"per_word": per_word.tolist(), "steps": steps, "sum": per_word.sum().item(),
            "p_baseline": at_baseline, "delta": delta.item(), "baseline": "[PAD] (a zero vector) at every position"}


@torch.no_grad()
def occlusion(model: nn.Module, ids: torch.Tensor, drops: list[list[int]], target: int, unk: int) -> list[float]:
    """For each set of positions: P(target) of the text minus P(target) with those words removed, re-read.

    An empty set removes nothing: the text is unchanged, so its change is exactly 0. A text left with no
    word is read as [UNK] alone, as predict reads a text with no token.
    """
    full = model(ids.view(-1, 1), torch.tensor([ids.shape[0]])).softmax(-1)[0, target]
    kept = [[int(w) for t, w in enumerate(ids) if t not in dropped] or [unk] for dropped in map(set, drops) if dropped]
    changes = iter([])
    if kept:
        width = max(len(k) for k in kept)
        batch = torch.tensor([k + [0] * (width - len(k)) for k in kept]).T  # [T', N] time-major, right-padded
        without = model(batch, torch.tensor([len(k) for k in kept])).softmax(-1)[:, target]  # [N]
        changes = iter((full - without).tolist())
    return [next(changes) if drop else 0.0 for drop in drops]


@dataclass
class Encoded:
    """One text as the model reads it: at most max_length token ids, their words, and what was cut."""

    ids: list[int]
    tokens: list[str]  # as the model saw them: [UNK] for a word outside the vocabulary
    words: list[str]  # the text's own characters for each token
    total: int  # tokens in the whole text, before the cut to max_length


def encode(tokenizer, text: str, max_length: int) -> Encoded:
    """The ids predict reads (tokenizer.encode_ids: cut to max_length, [UNK] alone if no token) plus words."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    if not enc.ids:
        return Encoded([tokenizer.token_to_id(UNK)], [UNK], [text.strip()], 0)
    words = [text[a:b] for a, b in enc.offsets[:max_length]]
    return Encoded(list(enc.ids[:max_length]), list(enc.tokens[:max_length]), words, len(enc.ids))


POSITIVE_NAMES = ("positive", "pos")  # as compare-baseline: a label named so, in any case, is the positive one


def target_class(labels: list[str], given: str | None = None) -> int | None:
    """The class explanations lean toward: `given` (explain --target), else the one label named 'positive'
    or 'pos' in any case; None where there is no such label: each text's predicted class then."""
    if given is not None:
        if given not in labels:
            raise SentimentRNNError(f"--target {given!r} is not one of the model's labels {labels}; pass one of them")
        return labels.index(given)
    named = [i for i, label in enumerate(labels) if label.lower() in POSITIVE_NAMES]
    return named[0] if len(named) == 1 else None


class Explainer:
    """A loaded run that explains texts; the model stays in float32 and eval mode."""

    def __init__(self, run: LoadedRun, target: str | None = None):
        self.run, self.model = run, run.model
        self.kind = model_kind(self.model)
        self.method = reading_method(self.model)
        self.labels: list[str] = list(run.meta["label_names"])
        self.fixed_target = target_class(self.labels, target)  # None: each text's predicted class
        self.target = self.fixed_target if self.fixed_target is not None else 0
        self.max_length = int(run.meta["max_length"])
        self.unk = run.tokenizer.token_to_id(UNK)

    @classmethod
    def from_dir(cls, model_dir: Path | None, threads: int | None = None, target: str | None = None) -> Explainer:
        runtime.configure_threads(threads)
        return cls(load_run(model_dir), target)

    def encode(self, text: str) -> Encoded:
        if not text.strip():
            raise SentimentRNNError("an empty text cannot be explained; pass a non-empty sentence")
        return encode(self.run.tokenizer, text, self.max_length)

    def occlude_word(self, text: str, word: str) -> float:
        """P(target) of the text minus P(target) with every occurrence of `word` removed, re-read."""
        enc = self.encode(text)
        normalize = self.run.tokenizer.normalizer.normalize_str if self.run.tokenizer.normalizer else str
        positions = [t for t, w in enumerate(enc.words) if normalize(w) == normalize(word)]
        return occlusion(self.model, torch.tensor(enc.ids), [positions], self.target, self.unk)[0]

    def explain(self, text: str, steps: int = IG_STEPS) -> dict:
        """Every number of one text's explanation, JSON-ready (see the module docstring)."""
        enc = self.encode(text)
        ids = torch.tensor(enc.ids)  # [T]
        with torch.no_grad():
            logits = self.model(ids.view(-1, 1), torch.tensor([len(enc.ids)]))[0]  # [C]
        self.target = self.fixed_target if self.fixed_target is not None else int(logits.argmax())
        with torch.no_grad():
            running = running_logits(self.model, ids).softmax(-1)[:, self.target]  # [T]
        probabilities = logits.softmax(-1)
        ig = integrated_gradients(self.model, ids, self.target, steps)
        occluded = occlusion(self.model, ids, [[t] for t in range(len(enc.ids))], self.target, self.unk)
        tokens = [{"position": t, "token": enc.tokens[t], "word": enc.words[t], "id": enc.ids[t],
                   "unknown": enc.ids[t] == self.unk, "p_running": running[t].item(),
                   "integrated_gradients": ig["per_word"][t], "occlusion": occluded[t]} for t in range(len(enc.ids))]
        record = {
            "text": text, "model": str(self.run.path), "kind": self.kind, "labels": self.labels,
            "target": self.labels[self.target], "label": self.labels[int(probabilities.argmax())],
            "probabilities": dict(zip(self.labels, probabilities.tolist(), strict=True)),
            "reading": self.method, "reading_means": READINGS[self.method], "tokens": tokens,
            "words_total": enc.total, "words_read": len(enc.ids) if enc.total else 0,
            "integrated_gradients": {k: v for k, v in ig.items() if k != "per_word"}, "notes": []}
        record["integrated_gradients"]["expected_sum"] = probabilities[self.target].item() - ig["p_baseline"]
        if self.kind == "per_word_linear":
            record["contributions"] = self._contributions(ids, tokens)
        record["notes"] = self._notes(record)
        return record

    @torch.no_grad()
    def _contributions(self, ids: torch.Tensor, tokens: list[dict]) -> dict:
        """The baseline's exact shares of the logits: per word, the padding positions and the head's bias."""
        logits, shares = baseline_parts(self.model, self.model.embedding(ids.view(-1, 1)))  # [1, C], [1, L, C]
        shares = shares[0]  # [L, C]
        others = [c for c in range(len(self.labels)) if c != self.target]

        def toward_target(share: torch.Tensor) -> float:  # margin of the target's logit over the others' mean
            return (share[self.target] - share[others].mean()).item() if others else share[self.target].item()

        for t, token in enumerate(tokens):
            token["contribution"] = toward_target(shares[t])
            token["contribution_per_class"] = dict(zip(self.labels, shares[t].tolist(), strict=True))
        padding, bias = shares[len(tokens):].sum(0), self.model.head.bias
        return {"means": "each position's own linear layer output through the final layer; toward the target: "
                         "its logit minus the mean of the other classes' logits",
                "padding": toward_target(padding), "head_bias": toward_target(bias),
                "padding_per_class": dict(zip(self.labels, padding.tolist(), strict=True)),
                "head_bias_per_class": dict(zip(self.labels, bias.tolist(), strict=True)),
                "logits": dict(zip(self.labels, logits[0].tolist(), strict=True))}

    def _notes(self, record: dict) -> list[str]:
        notes = []
        tokens = record["tokens"]
        if all(t["unknown"] for t in tokens):
            notes.append(f"all {len(tokens)} word(s) of this text are unknown to the model ([UNK]): it read only "
                         "[UNK] tokens, so the explanation says nothing about these words")
        unread = record["words_total"] - record["words_read"]
        if unread > 0:
            notes.append(f"the model read the first {record['words_read']} of {record['words_total']} tokens "
                         f"(data.max_length); {unread} token(s) at the end were not read")
        return notes
