"""`/health` checks each service over NATS: 503 naming the one that is down, 200 once it is back."""

import pytest

from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_health_reports_all_parts(stack: Stack):
    report = stack.wait_healthy()
    assert report["status"] == "healthy" and report["unhealthy"] == []
    assert report["api"]["healthy"] and report["nats"]["healthy"]
    assert {s["name"] for s in report["services"]} == {"scheduler", "pod-manager", "executor"}


@pytest.mark.parametrize("service", ["executor", "scheduler"])
def test_stopped_service_makes_health_503_until_it_is_back(stack: Stack, service: str):
    stack.stop(service)

    def unhealthy():
        response = stack.health()
        return response if response is not None and response.status_code == 503 else None

    report = wait_for(unhealthy, 15, f"503 after stopping {service}").json()
    assert report["unhealthy"] == [service]
    entry = next(s for s in report["services"] if s["name"] == service)
    assert entry["healthy"] is False and service in entry["detail"]
    assert set(report) == {"status", "api", "nats", "services", "unhealthy", "fleet"}

    stack.start(service)
    assert stack.wait_healthy(timeout=30)["unhealthy"] == []
