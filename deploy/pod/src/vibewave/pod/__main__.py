"""`python -m vibewave.pod`, and the entry point of the bootstrap archive: run the bootstrap."""

from vibewave.pod.bootstrap import main

raise SystemExit(main())
