"""`python -m kexp`: same as the `kexp` command."""

from kexp.cli import main

raise SystemExit(main())
