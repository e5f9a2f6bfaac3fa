"""Public namespaces are explicit and honest: every name in __all__ exists, nothing public is missing.

One test for the packages that promise it (push has its own in tests/push/test_exports.py).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ["engine.features", "engine.recommend", "engine.training"]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]


MODULES = [m for p in PACKAGES for m in _modules(p)]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_existing_public_names(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert sorted(set(module.__all__)) == sorted(module.__all__), f"{name}.__all__ has duplicates"
    for export in module.__all__:
        assert hasattr(module, export), f"{name}.__all__ names {export!r}, which does not exist"


@pytest.mark.parametrize("name", MODULES)
def test_public_functions_and_classes_defined_here_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    own = {
        n for n, obj in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    }
    assert own <= set(module.__all__), f"{name} defines public {sorted(own - set(module.__all__))} outside __all__"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_reexports_are_the_same_objects(package: str) -> None:
    pkg = importlib.import_module(package)
    for export in pkg.__all__:
        obj = getattr(pkg, export)
        home = getattr(obj, "__module__", None)
        if home and home.startswith(package + "."):
            assert getattr(importlib.import_module(home), export, obj) is obj
