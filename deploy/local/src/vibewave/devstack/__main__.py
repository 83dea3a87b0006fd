"""`python -m vibewave.devstack`: the whole system locally (what `make run` starts)."""

import sys

from vibewave.devstack.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
