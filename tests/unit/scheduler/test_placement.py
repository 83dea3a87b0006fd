from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from vibewave.contracts.events import PodRecord, PodStatus, RequestRecord
from vibewave.contracts.models import Priority, RequestStatus
from vibewave.scheduler.placement import Placer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MANAGER = "pm-1"


def fixed_clock() -> float:
    """Ten seconds after the first request: too soon for any aging."""
    return T0.timestamp() + 10


def request(n: int, priority: Priority = Priority.NORMAL, workflow: str = "wf", needs: int = 0) -> RequestRecord:
    return RequestRecord(
        id=f"r{n}",
        workflow_name=workflow,
        inputs={},
        status=RequestStatus.PENDING,
        priority=priority,
        created_at=T0 + timedelta(seconds=n),
        updated_at=T0,
        min_gpu_memory_gb=needs,
    )


def pod(n: int, status: PodStatus = PodStatus.READY, memory: int | None = None, manager: str = MANAGER) -> PodRecord:
    return PodRecord(
        id=f"p{n}", name=f"p{n}", provider="local", status=status, manager=manager, gpu_memory_gb=memory,
        comfyui_url="http://x", created_at=T0, updated_at=T0,
    )  # fmt: skip


def placed(placer: Placer) -> list[tuple[str, str]]:
    return [(p.request_id, p.pod.id) for p in placer.place(MANAGER)]


def counts(placer: Placer) -> dict[int, tuple[int, int]]:
    """Per GPU class: (requests waiting, requests on pods)."""
    return {need.min_gpu_memory_gb: (need.waiting, need.running) for need in placer.needs()}


def test_highest_priority_first_then_fifo():
    placer = Placer(clock=fixed_clock)
    for record in (request(1, Priority.LOW), request(2), request(3, Priority.HIGH), request(4)):
        placer.enqueue(record)
    order = []
    for n in range(4):
        placer.update_pod(pod(n))
        order += [p.request_id for p in placer.place(MANAGER)]
    assert order == ["r3", "r2", "r4", "r1"]


def test_a_pod_holds_one_request_until_released():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1))
    placer.enqueue(request(2))
    placer.update_pod(pod(1))
    assert placed(placer) == [("r1", "p1")]
    assert placed(placer) == []
    assert placer.release("r1") == "p1"
    assert placed(placer) == [("r2", "p1")]


def test_any_ready_pod_serves_any_workflow():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1, workflow="video"))
    placer.update_pod(pod(1, PodStatus.STARTING))
    assert placed(placer) == []
    placer.update_pod(pod(1))
    assert placed(placer) == [("r1", "p1")]
    placer.release("r1")
    placer.enqueue(request(2, workflow="image"))
    assert placed(placer) == [("r2", "p1")], "the same pod takes the other workflow next"


def test_only_pods_verified_by_the_live_pod_manager_take_work():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1))
    placer.update_pod(pod(1, manager="pm-of-an-earlier-run"))
    assert placer.place(MANAGER) == []
    assert placer.place(None) == [], "no live pod-manager: nothing is placed"
    placer.update_pod(pod(1))
    assert placed(placer) == [("r1", "p1")]


def test_a_burst_of_one_workflow_delays_another_by_one_run_at_most():
    placer = Placer(clock=fixed_clock)
    for n in range(10):
        placer.enqueue(request(n, workflow="image"))
    for n in range(3):
        placer.update_pod(pod(n))
    assert {r for r, _ in placed(placer)} == {"r0", "r1", "r2"}
    placer.enqueue(request(50, workflow="video"))
    placer.release("r0")
    assert placed(placer) == [("r50", "p0")], "the next free pod goes to the workflow with none running"
    placer.release("r1")
    assert placed(placer)[0][0] == "r3"


def test_priority_still_beats_fair_share():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1, workflow="video"))
    placer.enqueue(request(2, Priority.HIGH, workflow="image"))
    placer.update_pod(pod(1))
    placer.update_pod(pod(2))
    placer.enqueue(request(3, Priority.HIGH, workflow="image"))
    assert [r for r, _ in placed(placer)] == ["r2", "r3"]


def test_a_request_prefers_the_pod_that_ran_its_workflow():
    placer = Placer(clock=fixed_clock)
    placer.update_pod(pod(1))
    placer.update_pod(pod(2))
    placer.enqueue(request(1, workflow="image"))
    placer.enqueue(request(2, workflow="video"))
    first = dict(placed(placer))
    placer.release("r1")
    placer.release("r2")
    placer.enqueue(request(3, workflow="video"))
    assert placed(placer) == [("r3", first["r2"])], "its models are loaded there"


def test_a_workflow_needing_a_bigger_gpu_runs_only_on_pods_that_have_it():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1, workflow="wan14b", needs=48))
    placer.enqueue(request(2, workflow="image"))
    placer.update_pod(pod(1, memory=24))
    assert placed(placer) == [("r2", "p1")], "the small pod takes what it can"
    placer.update_pod(pod(2, memory=80))
    assert placed(placer) == [("r1", "p2")]
    placer.release("r1")
    placer.release("r2")
    placer.enqueue(request(3, workflow="image"))
    placer.update_pod(pod(3, memory=24))
    assert placed(placer) == [("r3", "p1")], "the pod that ran its workflow, not the big one"
    assert counts(placer) == {0: (0, 1)}


def test_a_suspect_pod_gets_nothing_until_pod_manager_has_seen_the_fault_and_it_is_ready():
    placer = Placer(clock=fixed_clock)
    placer.update_pod(pod(1))
    placer.suspect("p1", fault_seq=40)
    placer.enqueue(request(1))
    assert placed(placer) == []
    placer.update_pod(msgspec.structs.replace(pod(1), fault_seq=39))
    assert placed(placer) == [], "a record from before the fault report does not clear it"
    placer.update_pod(msgspec.structs.replace(pod(1), status=PodStatus.SUSPECT, fault_seq=40))
    assert placed(placer) == []
    placer.update_pod(msgspec.structs.replace(pod(1), fault_seq=40))
    assert placed(placer) == [("r1", "p1")]


def test_a_retry_waits_out_its_backoff():
    now = [T0.timestamp() + 10]
    placer = Placer(clock=lambda: now[0])
    placer.update_pod(pod(1))
    retry = msgspec.structs.replace(request(1), attempts=1, not_before=T0 + timedelta(seconds=12))
    placer.enqueue(retry, front=True)
    assert placer.queued_count == 1 and placed(placer) == []
    now[0] += 3
    assert placed(placer) == [("r1", "p1")]


def test_demand_counts_waiting_and_running_per_gpu_class():
    placer = Placer(clock=fixed_clock)
    for n in range(3):
        placer.enqueue(request(n))
    placer.enqueue(request(9, workflow="wan14b", needs=48))
    placer.update_pod(pod(1, memory=24))
    placer.place(MANAGER)
    assert counts(placer) == {0: (2, 1), 48: (1, 0)}
    assert placer.busy_pods() == ["p1"]


def test_retried_request_goes_first_and_enqueue_is_idempotent():
    placer = Placer(clock=fixed_clock)
    placer.enqueue(request(1))
    placer.enqueue(request(2))
    placer.enqueue(request(2))
    placer.enqueue(request(3), front=True)
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place(MANAGER)] == ["r3"]
    assert placer.queued_count == 2


def test_restore_rebuilds_queue_and_occupancy():
    running = request(1)
    running.status, running.pod_id = RequestStatus.RUNNING, "p1"
    placer = Placer(clock=fixed_clock)
    placer.restore([request(3), running, request(2)])
    placer.update_pod(pod(1))
    placer.update_pod(pod(2))
    assert placed(placer) == [("r2", "p2")]


def test_low_priority_ages_past_newer_high_priority_requests():
    now = [T0.timestamp() + 100]
    placer = Placer(aging_s=30, clock=lambda: now[0])
    old_low = request(1, Priority.LOW)  # created at T0+1: has waited 99 s, three classes of aging
    fresh_high = request(99, Priority.HIGH)  # created at T0+99
    placer.enqueue(fresh_high)
    placer.enqueue(old_low)
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place(MANAGER)] == ["r1"], "the long-waiting low request goes first"


def test_without_waiting_long_the_class_decides():
    now = [T0.timestamp() + 10]
    placer = Placer(aging_s=30, clock=lambda: now[0])
    placer.enqueue(request(1, Priority.LOW))
    placer.enqueue(request(5, Priority.HIGH))
    placer.update_pod(pod(1))
    assert [p.request_id for p in placer.place(MANAGER)] == ["r5"]


def test_expired_lists_requests_past_the_queue_ttl():
    now = [T0.timestamp() + 100]
    placer = Placer(clock=lambda: now[0])
    for n in (1, 2, 90):
        placer.enqueue(request(n))
    assert placer.expired(ttl_s=50) == ["r1", "r2"]
    placer.forget("r1")
    assert placer.expired(ttl_s=50) == ["r2"]
    assert counts(placer) == {0: (2, 0)}
    assert placer.waiting_in_class(0) == ["r2", "r90"] and placer.waiting_in_class(48) == []


def test_a_request_goes_only_to_a_pod_that_lists_its_model_files():
    placer = Placer(clock=fixed_clock)
    lora4 = "loras/Qwen-Image-Lightning-4steps-V1.0.safetensors"
    base = ["diffusion_models/qwen_image_fp8_e4m3fn.safetensors", "vae/qwen_image_vae.safetensors"]
    downloading = msgspec.structs.replace(pod(1), models=base, models_missing=[lora4])
    complete = msgspec.structs.replace(pod(2), models=[*base, lora4])
    placer.update_pod(downloading)
    needs_lora = msgspec.structs.replace(request(1), models=[*base, lora4])
    placer.enqueue(needs_lora)
    placer.enqueue(msgspec.structs.replace(request(2, workflow="other"), models=base))
    assert placed(placer) == [("r2", "p1")], "the pod without the LoRA takes only what it can run"
    placer.update_pod(complete)
    assert placed(placer) == [("r1", "p2")]
    assert placer.listing([*base, lora4]) and not placer.listing(["loras/other.safetensors"])


def test_a_pod_whose_models_were_not_checked_serves_every_request():
    placer = Placer(clock=fixed_clock)
    placer.update_pod(pod(1))  # a local or static server: models None
    placer.enqueue(msgspec.structs.replace(request(1), models=["loras/any.safetensors"]))
    assert placed(placer) == [("r1", "p1")]
