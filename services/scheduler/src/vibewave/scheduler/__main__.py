"""`python -m vibewave.scheduler`."""

from vibewave.runtime.process import run_service
from vibewave.scheduler.service import SchedulerService
from vibewave.scheduler.settings import SchedulerSettings

if __name__ == "__main__":
    run_service("scheduler", lambda common, tracing: SchedulerService(SchedulerSettings.from_env(common), tracing))
