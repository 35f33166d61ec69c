"""The docs match the code: CI runs the README's own commands, every command and config is documented."""

from pathlib import Path

from typer.main import get_command

from sentiment_rnn.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_quick_start_commands():
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln and not ln.startswith(("#", "set ", "cd "))]
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    development = README.split("## Development", 1)[1].split("\n## ", 1)[0]
    *setup, first, second = ci_lines
    assert len(setup) <= 1 and all("apt-get install" in line for line in setup)  # a system package, no more
    for line in setup:  # installed before the quick start, as the README's Development section says
        assert f"```bash\n{line}\n```" in development
    for line in (first, second):
        assert f"```bash\n{line}\n```" in quick_start


def test_every_command_has_help_text_and_a_readme_entry():
    commands = get_command(app).commands
    assert {"train", "predict", "evaluate"} <= set(commands)
    for name, command in commands.items():
        assert command.help and command.help.strip(), f"{name} has no help text"
        assert f"sentiment-rnn {name}" in README, f"README does not document {name}"


def test_the_command_table_lists_every_option_of_each_command():
    for name, command in get_command(app).commands.items():
        row = next(line for line in README.splitlines() if line.startswith(f"| `sentiment-rnn {name} "))
        options = [max(param.opts, key=len) for param in command.params if param.opts[0].startswith("-")]
        missing = [option for option in options if f"[{option}" not in row and f"| {option}" not in row]
        assert not missing, f"README's command table lacks {name}'s {missing}"


def test_every_config_key_is_documented():
    from sentiment_rnn.config import LMRunConfig

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                yield from keys(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    # only the table's rows count: a key mentioned elsewhere in the README is not documented
    section = README[README.index("## Configuration"):]
    section = section[:section.index("\n## ")]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    missing = [k for k in keys(LMRunConfig) if f"`{k}`" not in table]
    assert not missing, f"README's config table lacks {missing}"
