"""`python -m vibewave.executor`."""

from vibewave.contracts.runtime.process import run_service
from vibewave.executor.service import ExecutorService
from vibewave.executor.settings import ExecutorSettings

if __name__ == "__main__":
    run_service("executor", lambda common, tracing: ExecutorService(ExecutorSettings.from_env(common), tracing))
