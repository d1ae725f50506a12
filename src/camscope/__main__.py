"""``python -m camscope``: the command-line interface."""

from camscope.cli.app import main

raise SystemExit(main())
