"""The helpers experiment files build their studies from: part of the author API.

An experiment (`experiments/*.py`, or your own on `KEXP_EXPERIMENTS_PATH`)
imports from `kexp` (configs, errors, `Harness`), `kexp.models`, `kexp.data`
and the modules listed in `__all__` here; nothing else of kexp is promised to
stay where it is. Import the module you need (`from kexp.study import plots`):
this package itself loads none of them.
"""

__all__ = [
    "charlm",     # character language models: training windows, bits per char, compiled sampling
    "classify",   # the classifier experiments' train/evaluate/report path (load_data, train_classifier, ...)
    "compare",    # variants over seeds: reseeding, mean ± std, tables, curves
    "forecast",   # autoregressive rollout
    "gradients",  # GradientNormRecorder: gradient norms along training
    "ngram",      # interpolated modified Kneser-Ney character n-grams
    "plots",      # matplotlib (Agg) figures
    "recorders",  # callbacks that record curves (loss on fixed data, a layer's weights) per epoch
    "tables",     # result tables as Markdown and CSV in the run folder
]
