"""The house rules, checked on the generated package: imports run downward (no circle, counting imports inside
functions too), and no module outgrows one chapter."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / 'kaggle_distill'
MAX_LINES = 500                  # any module (the generated index `_modidx.py` aside): split the chapter before it passes this
MAX_TRAINER_LINES = 450          # the loop and the optimizer step, readable in one sitting


def package_imports(path: Path) -> set[str]:
    "Modules of this package that `path` imports anywhere (module level or inside a function), by short name."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1: names = [mod] if mod else [a.name for a in node.names]
            elif mod.startswith('kaggle_distill.'): names = [mod.split('.')[1]]
            elif mod == 'kaggle_distill': names = [a.name for a in node.names]
            else: continue
            out.update(n.split('.')[0] for n in names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split('.')[1] for a in node.names if a.name.startswith('kaggle_distill.'))
    modules = {p.stem for p in PKG.glob('*.py')}
    return {m for m in out if m in modules and m != path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: package_imports(p) for p in PKG.glob('*.py') if p.stem not in ('_modidx', '__init__')}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One import circle as a path [a, b, ..., a], or None."
    state, stack = {}, []
    def visit(n):
        state[n] = 'open'; stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 'open': return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)): return c
        state[n] = 'done'; stack.pop()
        return None
    for n in sorted(graph):
        if n not in state and (c := visit(n)): return c
    return None


def test_cycle_finder_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_circle():
    graph = import_graph()
    assert {'trainer', 'config', 'kd', 'retokenize', 'cli', 'kaggle'} <= set(graph)
    assert 'models' in graph['trainer'] or 'models' in graph['rundir']      # the parser sees imports inside functions
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PKG.glob('*.py') if p.name != '_modidx.py'}
    assert sizes['trainer.py'] <= MAX_TRAINER_LINES, sizes['trainer.py']
    assert max(sizes.values()) <= MAX_LINES, {k: v for k, v in sizes.items() if v > MAX_LINES}
