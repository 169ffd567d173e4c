"""``python -m diffembed.cli VERB ...``."""

from diffembed.cli.main import main

raise SystemExit(main())
