"""The package's shape, checked: no import circles, no import from a lower layer up to a higher one, a small
import closure for `sentiment_rnn.train` with nothing of speed/ or lm/ in it, and modules and functions of
a size a reader can hold.

    python scripts/check_architecture.py        # prints the figures; exit status 1 on any breach

Every import counts for circles and arrows, those inside functions too; the closure is what
`import sentiment_rnn.train` loads, measured in a fresh interpreter. tests/test_architecture.py runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sentiment_rnn"
MAX_CLOSURE, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 16, 400, 60
KEPT_OFF_THE_DEFAULT_PATH = ("sentiment_rnn.speed", "sentiment_rnn.lm")

# Lowest layer first. A module may import its own layer and those below; in the commands layer, only its own
# family (one trainer never reaches into another). A module missing here is reported, so the table stays whole.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"foundation": ("errors", "config", "runtime", "distributed")},
    {"parts": ("inputs", "records", "tokenizer", "sources", "sentence_carving", "splits", "data", "models",
               "models.rnn", "models.cells", "models.baseline", "models.bptt", "rundir", "checkpoint", "scoring",
               "optim", "plots", "tracking", "embeddings", "probe", "finetune", "sentences")},
    {"speed opt-in": ("speed", "speed.rnn", "speed.bidirectional", "speed.encoder")},
    {"train": ("train",),
     "pretrain-lm": ("lm", "lm.data", "lm.model", "lm.tokenizer", "lm.pretrain"),
     "pretrain-embeddings": ("pretrain",),
     "use a run": ("predict", "evaluate", "explain", "explain_render", "export", "onnx_backend", "quantize", "serve",
                   "shapes")},
    {"orchestration": ("stages", "compare", "sweep")},
    {"command line": ("cli_common", "console", "cli_run", "cli", "__main__")},
]


def module_files() -> dict[str, Path]:
    """Dotted names (without the package prefix; '' is the package itself) -> their files."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports anywhere in its body (`from sentiment_rnn.x import y` names
    the module x.y when y is one, else x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                inner = f"{node.module}.{alias.name}".removeprefix("sentiment_rnn.")
                found.add(f"sentiment_rnn.{inner}" if inner in modules else node.module)
    return {name.removeprefix("sentiment_rnn.") for name in found
            if name.startswith("sentiment_rnn.") and name.removeprefix("sentiment_rnn.") in modules}


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(path, modules) - {name, ""} for name, path in modules.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each an import circle."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def placement() -> dict[str, tuple[int, str]]:
    return {module: (level, family) for level, families in enumerate(LAYERS)
            for family, modules in families.items() for module in modules}


def back_arrows(edges: dict[str, set[str]]) -> list[str]:
    """Imports that climb to a higher layer, or cross between families of the commands layer."""
    where, found = placement(), []
    for source in sorted(edges):
        if source == "":
            continue
        for target in sorted(edges[source]):
            (level, family), (their_level, their_family) = where[source], where[target]
            if their_level > level or (their_level == level and len(LAYERS[level]) > 1 and their_family != family):
                found.append(f"{source} ({family}) -> {target} ({their_family})")
    return found


def closure(module: str = "sentiment_rnn.train") -> list[str]:
    """The package's modules loaded by importing `module` in a fresh interpreter, the package itself included."""
    code = (f"import sys, {module}; print('\\n'.join(sorted(m for m in sys.modules "
            "if m == 'sentiment_rnn' or m.startswith('sentiment_rnn.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:  # an import circle can make the import itself fail
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"importing {module} failed: {last}")
    return done.stdout.split()


def long_functions(path: Path) -> list[tuple[int, str]]:
    """(lines, name) of every function and method longer than MAX_FUNCTION_LINES, decorators not counted."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            found.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main() -> int:
    edges = graph()
    problems = []
    unplaced = sorted(set(edges) - set(placement()) - {""})
    if unplaced:
        print(f"modules missing from LAYERS: {', '.join(unplaced)}")
        return 1
    found_circles, arrows = circles(edges), back_arrows(edges)
    print(f"import circles: {len(found_circles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found_circles))
    print(f"imports from a lower layer to a higher one: {len(arrows)}" + "".join(f"\n  {a}" for a in arrows))
    problems += found_circles + arrows
    loaded = closure()
    off_path = [m for m in loaded if m.startswith(KEPT_OFF_THE_DEFAULT_PATH)]
    print(f"import closure of sentiment_rnn.train: {len(loaded)} modules (at most {MAX_CLOSURE}): {', '.join(loaded)}")
    print(f"  of speed/ or lm/: {len(off_path)}" + (f" ({', '.join(off_path)})" if off_path else ""))
    problems += off_path + (["closure"] if len(loaded) > MAX_CLOSURE else [])
    sizes = sorted((len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT)))
                   for p in PACKAGE.rglob("*.py"))
    big = [f"{name} ({lines})" for lines, name in sizes if lines > MAX_MODULE_LINES]
    print(f"largest module: {sizes[-1][1]}, {sizes[-1][0]} lines (at most {MAX_MODULE_LINES}); over: {len(big)}"
          + "".join(f"\n  {b}" for b in big))
    functions = sorted(f for p in PACKAGE.rglob("*.py") for f in long_functions(p))
    long = [f"{name} ({lines})" for lines, name in functions if lines > MAX_FUNCTION_LINES]
    print(f"largest function: {functions[-1][1]}, {functions[-1][0]} lines (at most {MAX_FUNCTION_LINES}); "
          f"over: {len(long)}" + "".join(f"\n  {f}" for f in long))
    problems += big + long
    print("OK" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
