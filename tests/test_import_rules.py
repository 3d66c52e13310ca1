"""The layout's import rules, read from the source with ast so they cannot erode silently.

- One way: bench.py -> sweep -> trainables -> hwctl. A module never imports a layer above its own.
- sweep/results/ imports neither Ray nor the rest of sweep/ (plans, runner, nodes): a store is read without a cluster.
- The worker and the timing protocol import no framework, directly or through any project module they import; the
  framework-neutral core of trainables/ reaches a framework's package only through the trainer registry (an import
  string), and no framework's package imports another's.
- A framework's declaration (trainables/<name>_backend/support.py) imports no framework: config validation reads it
  in every process, including the sweep's driver.
- No import circle between project modules, counting imports inside functions and under TYPE_CHECKING.
- No module over 400 lines outside tests (STYLE.md), but the column registry, whose entries are data.

Every import counts wherever it sits (module level, inside a function, under TYPE_CHECKING): a lazy import still
ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("sweep", "trainables", "hwctl")
LAYERS = {"bench": 3, "sweep": 2, "trainables": 1, "hwctl": 0}
# numpy is not on the list: the worker hands the trainer its tokens as a NumPy array whatever the framework
FRAMEWORK_MODULES = ("torch", "torchao", "pytorch_optimizer", "jax", "jaxlib", "optax")
FRAMEWORK_FREE = ("trainables.worker", "trainables.timing")
MAX_LINES = 400
DATA_MODULES = {"trainables.columns": "the column registry: one entry per result column, data rather than code"}


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of the project's own code under `root` (bench.py and the three packages)."""
    files = {"bench": root / "bench.py"} if (root / "bench.py").exists() else {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports: project modules by their dotted name, others by their top-level package."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(filter(None, [*anchor, base]))
            # `from sweep.results import compare` imports the module sweep.results.compare
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:  # `import a.b.c`: the deepest project module named
                target = target.rpartition(".")[0]
            found.add(target if target in known else target.split(".")[0])
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


ANALYSIS = ("sweep.results", "sweep.predict")


def layer_of(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0])


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target in graph and layer_of(target) > layer_of(module):
                problems.append(
                    f"{module} imports {target}: a layer above its own (bench -> sweep -> trainables -> hwctl)"
                )
            # results/ and predict/ read a store: the report may draw the predictor's section, nothing else of sweep/
            if module.startswith(ANALYSIS) and (
                target == "ray" or (target.startswith("sweep.") and not target.startswith(ANALYSIS))
            ):
                problems.append(f"{module} imports {target}: results/ and predict/ read a store without Ray or plans")
    return problems


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through the project modules it imports."""
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def framework_backend(module: str) -> str | None:
    """'trainables.torch_backend' for any module of torch's package, else None."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "trainables" and len(parts) > 2 else None


def framework_leaks(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module in FRAMEWORK_FREE:
        loaded = sorted(t for t in reachable(graph, module) if t in FRAMEWORK_MODULES or framework_backend(t))
        if loaded:
            problems.append(f"{module} imports a framework: {', '.join(loaded)}")
    for module, targets in sorted(graph.items()):
        own = framework_backend(module)
        for target in sorted(targets):
            other = framework_backend(target)
            if module.startswith("trainables.") and own is None and other:
                problems.append(f"{module} imports {target}: the core reaches a framework only through the registry")
            elif own and other and other != own:
                problems.append(f"{module} imports {target}: one framework's package imports another's")
        if own and module == f"{own}.support":
            loaded = sorted(t for t in reachable(graph, module) if t in (*FRAMEWORK_MODULES, "numpy"))
            if loaded:
                problems.append(f"{module} is a declaration and imports a framework: {', '.join(loaded)}")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle between project modules once, as the modules along it (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph[module]:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO_ROOT)


def test_the_graph_sees_the_project(graph):
    assert {"bench", "sweep.runner", "sweep.results.report", "trainables.worker", "hwctl.cores"} <= set(graph)
    assert "trainables.config" in graph["sweep.runner"]
    assert "ray" in graph["sweep.tuning"] and "hwctl.cores" in graph["trainables.launcher"]


def test_layers_import_one_way(graph):
    assert wrong_way_imports(graph) == []


def test_worker_timing_and_declarations_import_no_framework(graph):
    assert framework_leaks(graph) == []


def test_no_import_circle(graph):
    assert import_cycles(graph) == []


def test_no_module_over_400_lines():
    code = [
        REPO_ROOT / "bench.py",
        *(p for d in (*PACKAGES, "scripts", "benchmarks") for p in (REPO_ROOT / d).rglob("*.py")),
    ]
    data = {REPO_ROOT / (name.replace(".", "/") + ".py") for name in DATA_MODULES}
    long = {
        str(p.relative_to(REPO_ROOT)): n
        for p in code
        if p not in data and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


# ---- the checks catch what they are for: planted wrong-way imports in a copy of the layout --------------------------
def plant(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return import_graph(tmp_path)


def test_a_planted_upward_import_is_caught(tmp_path):
    graph = plant(
        tmp_path,
        {
            "bench.py": "import sweep.runner\n",
            "sweep/runner.py": "from trainables import config\n",
            "trainables/config.py": "def f():\n    from sweep.runner import run\n",  # lazy: counts all the same
            "hwctl/cores.py": "from trainables.config import X\n",
        },
    )
    assert wrong_way_imports(graph) == [
        "hwctl.cores imports trainables.config: a layer above its own (bench -> sweep -> trainables -> hwctl)",
        "trainables.config imports sweep.runner: a layer above its own (bench -> sweep -> trainables -> hwctl)",
    ]
    assert import_cycles(graph) == [["sweep.runner", "trainables.config"]]


def test_results_importing_ray_or_a_plan_is_caught(tmp_path):
    graph = plant(
        tmp_path,
        {
            "sweep/plan.py": "",
            "sweep/results/report.py": "import ray\nfrom sweep.plan import Plan\nfrom sweep.results import store\n"
            "from sweep.predict import fit\n",
            "sweep/results/store.py": "",
            "sweep/predict/fit.py": "from sweep.runner import run\nfrom sweep.results import store\n",
            "sweep/runner.py": "",
        },
    )
    assert wrong_way_imports(graph) == [
        "sweep.predict.fit imports sweep.runner: results/ and predict/ read a store without Ray or plans",
        "sweep.results.report imports ray: results/ and predict/ read a store without Ray or plans",
        "sweep.results.report imports sweep.plan: results/ and predict/ read a store without Ray or plans",
    ]


def test_a_framework_reached_by_the_worker_or_a_declaration_is_caught(tmp_path):
    graph = plant(
        tmp_path,
        {
            "trainables/worker.py": "from trainables import dataset\n",
            "trainables/dataset.py": "from trainables.helpers import tokens\n",
            "trainables/helpers.py": "import numpy\nif False:\n    import torch.nn\n",
            "trainables/timing.py": "import time\n",
            "trainables/config.py": "from trainables.jax_backend.support import SUPPORT\n",
            "trainables/jax_backend/support.py": "import numpy as np\n",
            "trainables/jax_backend/trainer.py": "from trainables.torch_backend.model import GPT\n",
            "trainables/torch_backend/model.py": "import torch\n",
        },
    )
    assert framework_leaks(graph) == [
        "trainables.worker imports a framework: torch",
        "trainables.config imports trainables.jax_backend.support: the core reaches a framework only through the registry",
        "trainables.jax_backend.support is a declaration and imports a framework: numpy",
        "trainables.jax_backend.trainer imports trainables.torch_backend.model: one framework's package imports another's",
    ]
