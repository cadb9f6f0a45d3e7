"""The package's structure, held to what README and DEVELOPERS promise: the facade, layers that
import only downwards (no stage imports another stage), and small functions."""

import ast
from pathlib import Path

import pytest

import dsmscale

PACKAGE = Path(dsmscale.__file__).parent
#: Each top-level module or package of dsmscale in its layer; a module imports only from lower
#: layers, or from its own layer where that layer allows it.
LAYERS = {
    "base": {"errors", "config", "geometry", "resampling", "rotations", "hardware", "failpoints",
             "parallel"},
    "io": {"io"},
    "shared": {"models", "checkpoints", "weights", "inference", "metrics", "report",
               "profiling", "averaging", "statistics"},
    "stages": {"conversion", "picking", "extraction", "simulation", "training", "evaluation",
               "discovery"},
    "top": {"pipeline", "datasets", "randomised", "experiments", "cli", "__init__"},
}
RANK = {name: rank for rank, names in enumerate(LAYERS.values()) for name in names}
#: Layers whose members may import each other (a stage never imports another stage).
SIBLINGS_ALLOWED = {"base", "io", "shared", "top"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts[0]


def _imported(tree: ast.AST) -> set[str]:
    """The dsmscale top-level modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dsmscale"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("dsmscale.")}
    return found


def test_every_module_has_a_layer():
    assert {top for _, top in _modules()} <= set(RANK)


@pytest.mark.parametrize("path", [p for p, _ in _modules()], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    own = path.relative_to(PACKAGE).with_suffix("").parts[0]
    assert not _upward(own, _imported(ast.parse(path.read_text())))


def _upward(own: str, targets: set[str]) -> list[str]:
    """The imports of module ``own`` that go up a layer, or sideways where that is not
    allowed."""
    layer = _layer(own)
    return [f"{own} ({layer}) imports {t} ({_layer(t)})" for t in sorted(targets - {own})
            if not (RANK[t] < RANK[own] or (RANK[t] == RANK[own] and layer in SIBLINGS_ALLOWED)
                    or (layer == "top" and t == "__init__"))]  # the CLI calls the facade


def _layer(module: str) -> str:
    return next(name for name, members in LAYERS.items() if module in members)


def test_the_layer_check_sees_a_stage_importing_a_stage():
    tree = ast.parse("from dsmscale.conversion import convert_many\n"
                     "def f():\n    import dsmscale.io.job\n")
    assert _imported(tree) == {"conversion", "io"}
    assert _upward("simulation", {"conversion", "io"}) == [
        "simulation (stages) imports conversion (stages)"]
    assert _upward("io", {"report"}) == ["io (io) imports report (shared)"]
    assert not _upward("pipeline", {"conversion", "io"})


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
            for path, _ in _modules() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 60]
    assert not long


def test_the_facade_gives_the_workflow():
    for name in ("convert", "read_particles", "write_particles", "pick", "extract_subtomograms",
                 "simulate", "train", "evaluate", "run", "discover", "ConvertConfig",
                 "PickConfig", "ExtractConfig", "SimulateConfig", "TrainConfig", "RunConfig",
                 "DiscoverConfig"):
        assert name in dsmscale.__all__ and callable(getattr(dsmscale, name))
    assert dsmscale.__version__
    with pytest.raises(AttributeError):
        dsmscale.no_such_thing  # noqa: B018
