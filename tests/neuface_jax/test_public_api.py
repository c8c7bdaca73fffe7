"""The public API: top-level entry points, no import cycles, no hidden sibling imports."""

import ast
import importlib
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import neuface_jax

ROOT = pathlib.Path(neuface_jax.__file__).resolve().parent.parent


def test_top_level_entry_points_resolve_to_their_modules():
    for name in neuface_jax.__all__:
        value = getattr(neuface_jax, name)
        module, attr = neuface_jax._API[name]
        assert value is getattr(importlib.import_module(module), attr), name
    assert neuface_jax.FitConfig().num_epochs == 100


def test_unknown_attribute_is_an_attribute_error():
    try:
        neuface_jax.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def _modules():
    for pkg in ("neuface_jax", "flame_jax"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    # Each module first in its own process: an import cycle shows up as an ImportError here.
    names = [n for n, _ in _modules()]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for i in range(0, len(names), 25):  # a few processes, each importing a batch in sorted order
        batch = names[i:i + 25]
        r = subprocess.run([sys.executable, "-c", code, *batch], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]


def _layer(name: str) -> int:
    # The synthetic demo pipeline is an application like annotation (it scores with annotation's helpers).
    # photometric: the differentiable render and its loss term (uses the media rasterizer); training: encoders
    # trained on this project's own annotations; realtime and model_learning are applications over all of those.
    order = ["flame_jax", "neuface_jax.common", "neuface_jax.core", "neuface_jax.priors", "neuface_jax.media",
             "neuface_jax.photometric", "neuface_jax.synthetic", "neuface_jax.annotation",
             "neuface_jax.synthetic.demo", "neuface_jax.training", "neuface_jax.dataset", "neuface_jax.realtime",
             "neuface_jax.model_learning", "neuface_jax.motion_prior", "neuface_jax.cli"]
    best = -1
    for i, prefix in enumerate(order):
        if name == prefix or name.startswith(prefix + "."):
            best = i
    return best


def test_imports_flow_one_way_and_sibling_imports_sit_at_module_top():
    offenders, hidden = [], []
    for name, path in _modules():
        tree = ast.parse(path.read_text())
        top_level = set(id(n) for n in tree.body)
        src_lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            targets = [t for t in targets if t.split(".")[0] in ("neuface_jax", "flame_jax")]
            if not targets:
                continue
            own = _layer(name)
            for t in targets:
                if _layer(t) > own >= 0:
                    offenders.append(f"{name} imports {t}")
            if id(node) not in top_level:
                # allowed with a written reason on the line or the line above
                context = " ".join(src_lines[max(0, node.lineno - 3):node.lineno])
                if "#" not in context:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "imports against the layer order:\n" + "\n".join(offenders)
    assert not hidden, "sibling imports inside functions without a written reason:\n" + "\n".join(hidden)
