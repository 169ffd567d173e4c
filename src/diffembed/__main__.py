"""``python -m diffembed VERB ...`` (and ``torchrun -m diffembed ...``)."""

from diffembed.cli.main import main

raise SystemExit(main())
