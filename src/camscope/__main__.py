"""``python -m camscope``: the command-line interface."""

from camscope.cli import main

raise SystemExit(main())
