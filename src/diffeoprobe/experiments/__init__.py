"""The papers' figures as small declarative specs, their presets, and the ``reproduce`` driver.

>>> from diffeoprobe.experiments import FIGURES, PRESETS
>>> list(FIGURES)
['scale-detection', 'theory', 'pooling', 'relu-tanh', 'noisy-training', 'error-vs-r']
>>> sorted(PRESETS)
['paper', 'quick', 'standard', 'tiny']

``reproduce("quick", "out/quick")`` trains what the figures need (resumable run directories under
``out/quick/runs/``), builds each figure, checks the papers' claims on it, and writes
``results.parquet``, the figures (PNG + PDF) and ``report.html``; see :mod:`.driver`.
"""

from diffeoprobe.experiments.driver import (
    FIGURES,
    FigureResult,
    ReproduceResult,
    figure_specs,
    reproduce,
)
from diffeoprobe.experiments.presets import PRESETS, Preset, ZooNet, get_preset
from diffeoprobe.experiments.spec import Claim, FigureSpec, Run, Verdict

__all__ = [
    "FIGURES",
    "PRESETS",
    "Claim",
    "FigureResult",
    "FigureSpec",
    "Preset",
    "ReproduceResult",
    "Run",
    "Verdict",
    "ZooNet",
    "figure_specs",
    "get_preset",
    "reproduce",
]
