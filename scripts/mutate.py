"""Mutation testing of one core module with its fast, in-process tests: which deliberate breaks survive?

    pip install -e ".[dev]"
    python scripts/mutate.py rundir            # sentiment_rnn/rundir.py against tests/test_rundir.py
    python scripts/mutate.py checkpoint --tests tests/test_checkpoint_resume.py
    python scripts/mutate.py predict --save /tmp/mutants-predict   # every mutant's status, survivors' diffs
    python scripts/mutate.py predict --only 'sentiment_rnn.predict.x*from_dir__mutmut_6'  # after a new test

Runs mutmut (configured in pyproject.toml, [tool.mutmut]) in a scratch copy of the repository (a git
checkout of its own), so its `mutants/` folder never lands in the working tree, with the test selection
narrowed to the module's tests.
Prints mutmut's results: every surviving mutant is a change to the code that no test noticed.
A tool for developers, not a CI gate.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the quick in-process tests that exercise each module; --tests overrides
TESTS = {
    "rundir": ["tests/test_rundir.py"],
    "checkpoint": ["tests/test_checkpoint_units.py", "tests/test_checkpoint_resume.py",
                   "-k", "not sigkill and not ctrl_c"],
    "predict": ["tests/test_predict.py", "tests/test_rundir.py"],
    "serve": ["tests/test_serve_app.py"],  # test_serve.py's servers are subprocesses: blind to mutants
    "data": ["tests/test_data.py", "tests/test_input_pipeline.py", "tests/test_batches.py",
             "tests/test_distributed.py::test_ranks_split_every_batch_and_all_take_the_same_number_of_steps",
             "tests/test_pretrain.py::test_corpus_is_the_training_rows_and_never_a_held_out_row",
             "tests/test_pretrain.py::test_unknown_source_is_refused"],
    # test_learning.py's other train() test alone takes ten seconds a mutant; test_train_loop.py checks more, faster
    "train": ["tests/test_learning.py::test_train_fast_cpu_takes_the_speed_route_and_reaches_the_plain_runs_weights",
              "tests/test_train_loop.py"],
    # test_learning's two training runs and compare-baseline's end-to-end runs check no model detail the
    # others miss and would make every surviving mutant cost half a minute
    "models": ["tests/test_cells.py", "tests/test_padding.py", "tests/test_bptt.py", "tests/test_gradient_probe.py",
               "tests/test_fast_rnn.py", "tests/test_learning.py", "tests/test_compare.py",
               "tests/test_model_wiring.py", "tests/test_finetune.py::test_concat_pooling_reads_real_tokens_only",
               "-k", "not overfits and not two_epochs and not train_fast_cpu and not compare_baseline"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(TESTS), help="core module under sentiment_rnn/")
    parser.add_argument("--tests", nargs="+", help="pytest arguments selecting the tests to run against mutants")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write results.txt (every mutant's status) and survivors.diff into DIR")
    parser.add_argument("--only", nargs="+", metavar="MUTANT",
                        help="test only these mutants (names or globs from results.txt), e.g. a run's survivors")
    args = parser.parse_args()
    target = "sentiment_rnn/models/*" if args.module == "models" else f"sentiment_rnn/{args.module}.py"
    selection = args.tests or TESTS[args.module]
    missing = [a for a in selection if a.startswith("tests/") and not (ROOT / a.split("::")[0]).exists()]
    if missing:  # mutmut would only say that pytest failed to start
        parser.error(f"no such test file: {', '.join(missing)}; pass the module's tests with --tests")
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp)
        for name in ("sentiment_rnn", "tests", "configs", "scripts"):
            shutil.copytree(ROOT / name, work / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "mutants"))
        config = (ROOT / "pyproject.toml").read_text()
        config = re.sub(r"only_mutate = \[[^\]]*\]", f"only_mutate = [{target!r}]".replace("'", '"'), config)
        config = re.sub(r'pytest_add_cli_args_test_selection = \[[^\]]*\]',
                        "pytest_add_cli_args_test_selection = [" + ", ".join(f'"{a}"' for a in selection) + "]",
                        config)
        (work / "pyproject.toml").write_text(config)
        # a git checkout, as the tests expect of the source tree: rundir.versions() records the commit
        git = ["git", "-c", "user.name=mutate", "-c", "user.email=mutate@localhost"]
        for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "scratch copy"]):
            subprocess.run([*git, *step], cwd=work, check=True)
        mutmut = [sys.executable, "-m", "mutmut"]
        # One torch thread per test process unless told otherwise: mutmut caps each mutant's CPU seconds, and on
        # a busy machine idle OpenMP threads spinning used them up, so passing tests were reported as timeouts.
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([*mutmut, "run", "--max-children", str(args.max_children), *(args.only or [])], cwd=work,
                       check=False, env=env)
        subprocess.run([*mutmut, "results"], cwd=work, check=False)
        if args.save:
            save_results(mutmut, work, args.save)


def save_results(mutmut: list[str], work: Path, folder: Path) -> None:
    """Every mutant's status, and the diff of each survivor, kept after the scratch copy is gone."""
    folder.mkdir(parents=True, exist_ok=True)
    results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, check=False,
                             capture_output=True, text=True).stdout
    (folder / "results.txt").write_text(results)
    survivors = [line.split(":")[0].strip() for line in results.splitlines() if line.endswith(": survived")]
    diffs = [subprocess.run([*mutmut, "show", name], cwd=work, check=False, capture_output=True,
                            text=True).stdout for name in survivors]
    (folder / "survivors.diff").write_text("\n".join(diffs))


if __name__ == "__main__":
    main()
