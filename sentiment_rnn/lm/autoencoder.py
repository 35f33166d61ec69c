"""The sequence autoencoder (lm.objective: autoencoder; Dai & Le 2015, "Semi-supervised Sequence Learning").

The classifier's own embedding and encoder read a window of a document into one state, as the classifier
reads a sentence; a decoder RNN starts from that state and reconstructs the window word by word. The whole
window must pass through the encoder's final state, so the encoder learns to summarise a sentence, which
is what the classifier's head later reads. The decoder shares the embedding and the output softmax
(nn.AdaptiveLogSoftmaxWithLoss, `head.*`, as in the next-word LM); it is left behind when a classifier
starts from the run (model.init_from copies `embedding.*` and `encoder.*` only).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.lm.model import Hidden, LanguageModel, real_token_loss, recurrent_layer
from sentiment_rnn.lm.tokenizer import EOS, SPECIAL

EOS_ID = SPECIAL.index(EOS)  # the LM tokenizer's fixed id for [EOS] (lm.tokenizer checks it when training)


def mirror(rnn: nn.RNNBase) -> nn.RNNBase:
    """A new, freshly initialised RNN of the same class, sizes, layers, dropout and nonlinearity."""
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    return type(rnn)(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, dropout=rnn.dropout, **kwargs)


class SequenceAutoencoder(LanguageModel):
    """Embedding -> encoder (state at each window's last real token) -> decoder (teacher forced) -> softmax.

    The language model's parts (same arguments, same `embedding.*`, `encoder.*` and `head.*` keys) plus
    `decoder.*`, scored through the same loss(input_ids, targets, hidden) so pretrain-lm's loop, held-out
    scoring and checkpoints serve both objectives.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decoder = mirror(recurrent_layer(self.encoder))

    def summary(self, windows: torch.Tensor) -> Hidden:
        """windows [T, B], right-padded with [PAD]=0 -> the encoder's final state of every layer, h (and c for
        an LSTM) each [layers, B, H]. Packing stops each row at its last real token: the padded end's state
        would have read [PAD]s after the sentence."""
        lengths = (windows != 0).sum(0)  # [B]; windows hold real tokens first, then padding only
        x = self.embedding_dropout(self.embedding(windows))  # [T, B, E]
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        _, hidden = recurrent_layer(self.encoder)(packed)  # in the batch's own row order
        return hidden

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [T, B] -> the decoder's top-layer outputs [T, B, H]; output t predicts windows[t].

        Teacher forcing: the decoder reads [EOS] and then the true tokens, not its own guesses.
        """
        start = torch.full_like(windows[:1], EOS_ID)  # [1, B]
        inputs = torch.cat([start, windows[:-1]])  # [T, B]: [EOS] w1 ... w(T-1)
        x = self.embedding_dropout(self.embedding(inputs))  # [T, B, E]
        out, _ = self.decoder(x, self.summary(windows))  # [T, B, H]
        return self.output_dropout(out)

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None = None):
        """Mean reconstruction cross-entropy over the real (non-[PAD]) tokens, their count, and None.

        input_ids and targets are the same windows [T, B] (lm.data.WindowBatches with reconstruct). Each window
        starts from a zero state, so no state is carried in or out.
        """
        if hidden is not None:
            raise SentimentRNNError("the sequence autoencoder reads each window from a zero state; it carries no "
                                    "hidden state (set lm.batching: documents)")
        return (*real_token_loss(self.head, self(input_ids), targets), None)
