"""The ``>>>`` examples in the package's docstrings run as doctests.

Examples that need the full Fashion-MNIST files or a long training run carry
``# doctest: +SKIP`` in the source (and say what they need); every other
example must print what its docstring shows. ``paddle`` and ``np`` are in
every example's namespace, as they are in the notebooks.
"""
import doctest
import importlib
import pkgutil

import numpy as np
import paddle
import pytest

import paddle_cnn

# A ``__main__`` module runs its command when imported, so it is never walked.
MODULES = sorted(m.name for m in pkgutil.walk_packages(paddle_cnn.__path__, "paddle_cnn.")
                 if m.name.rsplit(".", 1)[-1] != "__main__")


def _examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module_name, extraglobs={"paddle": paddle, "np": np}) if t.examples]


CASES = [(name, test) for name in MODULES for test in _examples(name)]


@pytest.mark.parametrize("name, test", CASES, ids=[t.name for _, t in CASES])
def test_docstring_example(name, test):
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    if runner.run(test, out=report.append).failed:
        pytest.fail("".join(report))


def test_there_are_examples_to_run():
    assert len(CASES) >= 15
