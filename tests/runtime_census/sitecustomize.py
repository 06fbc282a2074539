"""Runtime census (opt-in, see README.md): records which test loaded a real runtime.

Python imports this module at start-up when its folder is on PYTHONPATH, in the test workers and in every
`edgevit` subprocess they start. Once onnxruntime, LiteRT or ExecuTorch is imported, their model-loading entry
points are wrapped to append "<test node id>\\t<runtime>" to the file named by EDGEVIT_RUNTIME_CENSUS, the test
being the one pytest names in PYTEST_CURRENT_TEST (inherited by subprocesses). Without that variable it does
nothing.
"""

import importlib.abc
import importlib.util
import os
import sys

LOG = os.environ.get("EDGEVIT_RUNTIME_CENSUS")

# module -> (class or None for a module function, attribute, runtime name)
ENTRY_POINTS = {
    "onnxruntime": [("InferenceSession", "__init__", "onnxruntime")],
    "ai_edge_litert.interpreter": [("Interpreter", "__init__", "litert")],
    "executorch.runtime": [("Runtime", "load_program", "executorch")],
    "executorch.extension.pybindings.portable_lib": [(None, "_load_for_executorch", "executorch")],
}


def _record(runtime: str) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "")
    if LOG and test:
        # "path::name (call)": the phase is dropped, a fixture's load counts for the test it was set up for
        with open(LOG, "a") as f:
            f.write(f"{test.rsplit(' (', 1)[0]}\t{runtime}\n")


def _wrap(module, class_name, attribute, runtime):
    owner = getattr(module, class_name) if class_name else module
    original = getattr(owner, attribute, None)
    if original is None or getattr(original, "_census", False):
        return

    def wrapped(*args, **kwargs):
        _record(runtime)
        return original(*args, **kwargs)

    wrapped._census = True
    setattr(owner, attribute, wrapped)


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds the runtime modules through the other finders, and wraps their entry points once executed."""

    def find_spec(self, name, path, target=None):
        if name not in ENTRY_POINTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            for class_name, attribute, runtime in ENTRY_POINTS[name]:
                _wrap(module, class_name, attribute, runtime)

        spec.loader.exec_module = exec_and_wrap
        return spec


if LOG:
    sys.meta_path.insert(0, _WrapOnImport())
