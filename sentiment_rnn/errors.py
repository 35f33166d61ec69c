"""The project's one exception type: library code raises it, only the CLI prints it and exits."""


class SentimentRNNError(Exception):
    """A problem the user can fix; its message names the problem and the fix in one line."""
