"""Language-model pretraining of the classifier's own embedding and encoder (`sentiment-rnn pretrain-lm`)."""
