"""Sphinx configuration of the dask_streamkm documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.
The gallery runs every example in ``examples/`` that needs no download, no object store and
no GPU, at its ``--small`` size (``_ext/gallery_hooks.py``); the benchmark figures are drawn
from the recorded tables by ``docs/benchmark_figures.py``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import dask_streamkm  # noqa: E402

project = "dask_streamkm"
author = "the dask_streamkm developers"
copyright = "the dask_streamkm developers"
release = dask_streamkm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "cli_doc",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.md5"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "pydata_sphinx_theme"
html_title = f"dask_streamkm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    # The examples' code is 100 columns wide: their pages give the page's table of contents'
    # room to the code.
    "secondary_sidebar_items": {
        "[!a]*": ["page-toc", "sourcelink"],
        "a[!u]*": ["page-toc", "sourcelink"],
        "user_guide/*": ["page-toc", "sourcelink"],
        "generated/*": ["page-toc", "sourcelink"],
        "auto_examples/*": [],
    },
}
html_sidebars = {"index": [], "benchmarks": [], "development": [], "changes": []}
html_css_files = ["custom.css"]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()


sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    # Run the examples that need no download, no object store and no GPU.
    "filename_pattern": (
        r"/(quickstart|out_of_core_zarr|gdelt_workflow|embeddings_dedup|time_vs_cost|"
        r"cluster_picture)\.py$"
    ),
    "reset_argv": "gallery_hooks.reset_argv",
    "image_scrapers": ("gallery_hooks.png_scraper",),
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "download_all_examples": False,
    "plot_gallery": "True",
    "within_subsection_order": "FileNameSortKey",
}

# The docstrings' examples use their module's names, as pytest's --doctest-modules gives them.
doctest_global_setup = """
import numpy as np
from dask_streamkm import *
from dask_streamkm.io import *
from dask_streamkm.sagemaker import *
from dask_streamkm.datasets import *
from dask_streamkm.elbow import ElbowResult, ElbowSummaryWarning, knee_point, parse_k_range
"""


def _benchmark_figures(app):
    import benchmark_figures

    benchmark_figures.main(HERE / "_static")


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's metadata-routing setters (set_fit_request...) are generated for every
    # estimator and documented by scikit-learn; their docstrings link into its glossary.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    sys.path.insert(0, str(HERE))
    app.connect("builder-inited", _benchmark_figures)
    app.connect("autodoc-skip-member", _skip_member)
