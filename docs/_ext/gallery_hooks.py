"""Hooks that let sphinx-gallery run the examples as the test suite does.

Every example takes ``--small`` (a quick run) and, where it draws, ``--out PNG``. The gallery
runs each with ``--small --out <name>.png`` (:func:`reset_argv`; sphinx-gallery runs an example
in its own folder), and :func:`png_scraper` moves the PNG files an example wrote there into
the gallery after each cell. So the examples save their figures as plain scripts do (the
library draws on ``matplotlib.figure.Figure`` objects, which the matplotlib scraper does not
see), and nothing stays behind in ``examples/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _outputs(src_file):
    """The PNG files an example run by the gallery may write."""
    path = Path(src_file)
    return sorted(path.parent.glob(f"{path.stem}*.png"))


def reset_argv(gallery_conf, script_vars):
    """Command-line arguments of an example run by the gallery."""
    for stale in _outputs(script_vars["src_file"]):
        stale.unlink()
    return ["--small", "--out", f"{Path(script_vars['src_file']).stem}.png"]


def png_scraper(block, block_vars, gallery_conf):
    """Move the PNG files this example wrote since the last cell into the gallery."""
    from sphinx_gallery.scrapers import figure_rst

    image_paths = []
    targets = iter(block_vars["image_path_iterator"])  # as many names as asked for
    for path in _outputs(block_vars["src_file"]):
        target = next(targets)
        shutil.move(path, target)
        image_paths.append(target)
    return figure_rst(image_paths, gallery_conf["src_dir"])
