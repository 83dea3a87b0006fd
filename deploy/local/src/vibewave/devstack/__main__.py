"""`python -m vibewave.devstack`: the whole system locally (what `make run` starts)."""

import asyncio

from vibewave.devstack.supervisor import StackSettings, run_stack

if __name__ == "__main__":
    asyncio.run(run_stack(StackSettings.from_env()))
