"""The documentation's API reference names every public name (docs/api.rst).

The site itself is built by CI (``sphinx-build -W``); this check runs without Sphinx, so a
public name added without its place in the reference fails the test suite too.
"""

import inspect
import re
from importlib import import_module
from pathlib import Path

import dask_streamkm

API = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


def documented_names():
    """Fully qualified names listed in the autosummary tables of docs/api.rst."""
    names, module, in_table = set(), None, False
    for line in API.read_text().splitlines():
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = match.group(1)
        elif line.startswith(".. autosummary::"):
            in_table = True
        elif in_table and re.fullmatch(r"   [A-Za-z_][\w.]*", line):
            entry = line.strip()
            names.add(entry if entry.startswith("dask_streamkm.") else f"{module}.{entry}")
        elif in_table and line and not line.startswith("   "):
            in_table = False
    return names


def public_names():
    names = {f"dask_streamkm.{n}" for n in dask_streamkm.__all__ if not n.startswith("__")}
    for module in ("io", "elbow", "sagemaker"):
        mod = import_module(f"dask_streamkm.{module}")
        names |= {f"dask_streamkm.{module}.{n}" for n in mod.__all__}
    datasets = import_module("dask_streamkm.datasets")
    names |= {
        f"dask_streamkm.datasets.{n}"
        for n, obj in vars(datasets).items()
        if not n.startswith("_") and inspect.isfunction(obj)
    }
    return names


def test_api_reference_lists_every_public_name():
    documented = documented_names()
    # A name re-exported at the top level is documented once, under the package.
    top = {n.rsplit(".", 1)[1] for n in documented if n.count(".") == 1}
    missing = sorted(
        n for n in public_names() if n not in documented and n.rsplit(".", 1)[1] not in top
    )
    assert not missing, f"add these to docs/api.rst: {missing}"
