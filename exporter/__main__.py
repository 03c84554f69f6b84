"""``python -m exporter``: the same as the ``vobiz-exporter`` console script."""

from .cli import main

raise SystemExit(main())
