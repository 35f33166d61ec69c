"""Process-wide runtime settings: intra-op threads. (The heap policy's effect is measured by
scripts/bench.py --only rss: glibc's trimming makes it too fragile for an assertion here.)"""

import os

import torch

from sentiment_rnn import runtime


def test_default_threads_use_every_core_shared_among_the_ranks_of_a_node(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.default_threads() == max(1, min(4, cores))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert runtime.default_threads() == 1


def test_omp_num_threads_when_set_is_the_default(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.default_threads() == 3
    for ignored in ("0", "", "4,2"):  # not one positive count: the cores decide, as without it
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert runtime.default_threads() == 1


def test_a_server_leaves_half_the_cores_to_its_event_loop_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, threads in ((1, 1), (2, 1), (4, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert (runtime.default_threads(), runtime.server_threads()) == (min(4, cores), threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.server_threads() == 3


def test_configure_threads_sets_torch_to_the_given_number_or_the_default():
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert runtime.configure_threads(None) == runtime.default_threads() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_more_threads_than_cores_gets_a_note_and_the_cores_or_fewer_none(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    note = runtime.oversubscribed(3)
    assert note.startswith("Note: train.threads=3 is more than the 2 core(s)") and "leave train.threads out" in note
    assert [runtime.oversubscribed(n) for n in (2, 1, None)] == [None, None, None]


def test_training_with_more_threads_than_cores_says_so_before_loading_data(tmp_path):
    from conftest import TINY
    from in_process import run_cli

    threads, before = runtime.usable_cores() + 1, torch.get_num_threads()
    try:
        result = run_cli("train", "-c", TINY, "-o", tmp_path / "run", "--set", f"train.threads={threads}",
                         "--set", "train.epochs=1", "--set", "train.grad_probe_epochs=[]")
    finally:
        torch.set_num_threads(before)  # this test process's other tests keep their one thread
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert f"Note: train.threads={threads} is more than the {threads - 1} core(s)" in said
    assert said.index("Note: train.threads") < said.index("Loading data")
