"""`python -m vibewave.pod_manager`."""

from vibewave.contracts.runtime.process import run_service
from vibewave.pod_manager.service import PodManagerService
from vibewave.pod_manager.settings import PodManagerSettings

if __name__ == "__main__":
    run_service("pod-manager", lambda common, tracing: PodManagerService(PodManagerSettings.from_env(common), tracing))
