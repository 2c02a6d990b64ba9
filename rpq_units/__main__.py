"""``python -m rpq_units <subcommand>``: see :mod:`rpq_units.cli`."""

from rpq_units.cli import main

raise SystemExit(main())
