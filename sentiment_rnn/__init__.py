"""sentiment-rnn: train, evaluate and serve recurrent sentiment classifiers."""

__version__ = "0.1.0"
