"""kexp's command line: `kexp run`, `list`, `runs`, `sweep`, `check`, `bench`, `tensorboard` (`kexp.cli.app`).

Importing it loads no TensorFlow, so `kexp list` answers at once; each command imports what it needs.
"""

from kexp.cli.app import main

__all__ = ["main"]
