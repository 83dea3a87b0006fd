"""`python -m vibewave.pod_manager`."""

from vibewave.pod_manager.service import PodManagerService
from vibewave.pod_manager.settings import PodManagerSettings
from vibewave.runtime.process import run_service

if __name__ == "__main__":
    run_service("pod-manager", lambda common, tracing: PodManagerService(PodManagerSettings.from_env(common), tracing))
