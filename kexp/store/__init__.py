"""The run folder on disk: its layout and readers, atomic writes, state files, logs, saved models, run listings.

It never imports `kexp.engine`: tools that only read runs (`kexp runs`, sweeps) load no training code.
"""
