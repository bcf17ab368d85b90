"""One module per figure of the papers: its runs (a :class:`~diffeoprobe.experiments.spec.FigureSpec`),
its table, its plot and its claims. ``scale_detection`` here is the figure; the data set of the same
name is :mod:`diffeoprobe.data.scale_detection`.
"""

__all__ = ["error_vs_r", "idealised", "noisy_training", "pooling", "relu_tanh", "scale_detection"]
