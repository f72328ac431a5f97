"""``python -m mixer_ext`` is the same as the ``mixer-ext`` console script."""

from mixer_ext.cli import main

raise SystemExit(main())
