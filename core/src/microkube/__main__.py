"""``python -m microkube``: the CLI."""

from microkube.cli import main

raise SystemExit(main())
