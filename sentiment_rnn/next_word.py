"""The auxiliary language-model loss (`train.lm_loss_weight`): while the classifier trains, its encoder also
predicts each sentence's next word.

Semi-supervised multitask learning: the sentiment loss alone can bend a pretrained encoder into whatever
fits 6,800 labels, and a next-word loss on the same sentences keeps it reading language. The prediction
uses the top layer's outputs the classifier already computed, so the extra cost is the softmax alone,
and nn.AdaptiveLogSoftmaxWithLoss keeps that small. The head exists only while training: it is attached to
the classifier as `next_word` (so the optimizer, checkpoints and `--resume` carry it) and left out of the
saved `model.safetensors` (so `predict` loads the same classifier as always). Starting from a `pretrain-lm`
run, it begins as that run's own output softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from sentiment_rnn.config import Config
from sentiment_rnn.errors import SentimentRNNError

HEAD = "next_word"  # the attribute, and the state-dict prefix, of the head on the classifier
LM_HEAD = "head."  # a pretrain-lm run's adaptive softmax keys (a classifier run's head is head.weight/bias)


def attach_head(model: nn.Module, config: Config, vocab_size: int, lm_state: dict[str, torch.Tensor]) -> None:
    """Give the classifier its training-time next-word head, copied from a pretrain-lm run's softmax when
    lm_state holds one (its `head.*` tensors), else freshly initialised."""
    from sentiment_rnn.lm.model import usable_cutoffs

    if config.train.lm_loss_weight == 0:
        return
    width = model.encoder.output_size
    cutoffs = usable_cutoffs(config.lm.cutoffs, vocab_size)
    head = nn.AdaptiveLogSoftmaxWithLoss(width, vocab_size, cutoffs, div_value=config.lm.div_value)
    pretrained = {k[len(LM_HEAD):]: v for k, v in lm_state.items() if k.startswith(LM_HEAD)}
    if pretrained:
        try:
            head.load_state_dict(pretrained)
        except RuntimeError:
            raise SentimentRNNError(
                "model.init_from's language-model softmax does not fit train.lm_loss_weight's head; give lm.cutoffs "
                "and lm.div_value the values of the pretrain-lm run's config.yaml") from None
    model.add_module(HEAD, head.to(next(model.parameters()).device))


def loss(model: nn.Module, out: torch.Tensor, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from the top layer's output at t, over real tokens.

    out [T, B, H], input_ids [T, B], lengths [B]. The last real token has no next word in the sentence.
    """
    steps = torch.arange(1, input_ids.shape[0], device=input_ids.device).view(-1, 1)  # [T-1, 1]
    has_next = steps < lengths.to(input_ids.device).view(1, -1)  # [T-1, B]
    inputs = out[:-1][has_next]  # [N, H]: outputs whose next token is real
    if inputs.shape[0] == 0:  # a batch of one-word sentences
        return out.sum() * 0.0
    return getattr(model, HEAD)(inputs.float(), input_ids[1:][has_next]).loss


def detach_head(model: nn.Module) -> None:
    """Remove the head once training is over: what is scored and saved is the classifier predict loads."""
    if hasattr(model, HEAD):
        delattr(model, HEAD)
