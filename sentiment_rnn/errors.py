"""The project's one exception type: library code raises it, only the CLI prints it and exits."""


class SentimentRNNError(Exception):
    """A problem the user can fix; its message names the problem and the fix in one line."""


class TrainingInterrupted(SentimentRNNError):
    """Ctrl-C stopped training after a checkpoint was written; the CLI prints `resume_command`, exits 130."""

    def __init__(self, run, epoch: int, batches_done: int):
        import shlex

        self.run, self.epoch, self.batches_done = run, epoch, batches_done
        self.resume_command = f"sentiment-rnn train --resume {shlex.quote(str(run))}"
        super().__init__(f"training stopped at epoch {epoch} after {batches_done} batches; checkpoint saved. "
                         f"Resume with: {self.resume_command}")
