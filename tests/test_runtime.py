"""Process-wide runtime settings: intra-op threads. (The heap policy's effect is measured by
scripts/bench.py --only rss: glibc's trimming makes it too fragile for an assertion here.)"""

import os

import torch

from sentiment_rnn import runtime


def test_default_threads_share_half_the_cores_among_the_ranks_of_a_node(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.default_threads() == max(1, min(4, cores // 2))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert runtime.default_threads() == 1


def test_configure_threads_sets_torch_to_the_given_number_or_the_default():
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert runtime.configure_threads(None) == runtime.default_threads() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

