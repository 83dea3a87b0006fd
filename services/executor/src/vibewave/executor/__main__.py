"""`python -m vibewave.executor`."""

from vibewave.executor.service import ExecutorService
from vibewave.executor.settings import ExecutorSettings
from vibewave.runtime.process import run_service

if __name__ == "__main__":
    run_service("executor", lambda common, tracing: ExecutorService(ExecutorSettings.from_env(common), tracing))
