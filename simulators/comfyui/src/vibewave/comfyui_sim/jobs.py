"""The 0.33 jobs API (`/api/jobs...`), a read view over the queue and history plus cancel endpoints.

Shapes follow the recorded answers (transcripts 01, 08, 10, 11, 13): absent keys are pruned, an interrupted
prompt is `cancelled`, a failed one `failed` with its execution_error data, lists are newest first.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vibewave.comfyui_sim.app import Simulator
    from vibewave.comfyui_sim.state import QueueItem

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
PREVIEWABLE = ("images", "video", "gifs", "audio")


def _workflow_id(extra_data: dict[str, Any]) -> str | None:
    info = extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    wid = workflow.get("id") if isinstance(workflow, dict) else None
    return wid if isinstance(wid, str) else None


def _queued_job(item: QueueItem, status: str) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": item.prompt_id,
        "status": status,
        "priority": item.number,
        "create_time": item.extra_data.get("create_time"),
        "outputs_count": 0,
        "previewable_outputs_count": 0,
    }
    wid = _workflow_id(item.extra_data)
    if wid is not None:
        job["workflow_id"] = wid
    return job


def _finished_job(prompt_id: str, entry: dict[str, Any], detail: bool) -> dict[str, Any]:
    number, _, prompt, extra_data, _ = entry["prompt"]
    status = entry.get("status") or {}
    messages = status.get("messages", [])
    last = messages[-1][0] if messages else None
    if status.get("status_str") == "success":
        state = "completed"
    elif last == "execution_interrupted":
        state = "cancelled"
    else:
        state = "failed"
    job: dict[str, Any] = {"id": prompt_id, "status": state, "priority": number}
    job["create_time"] = extra_data.get("create_time")
    starts = [m[1]["timestamp"] for m in messages if m[0] == "execution_start"]
    if starts:
        job["execution_start_time"] = starts[0]
        job["execution_end_time"] = messages[-1][1]["timestamp"]
    if last == "execution_error":
        job["execution_error"] = messages[-1][1]
    outputs = entry.get("outputs", {})
    count, previewable, preview = 0, 0, None
    for node_id, ui in outputs.items():
        for key, items in ui.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    count += 1
                    if key in PREVIEWABLE:
                        previewable += 1
                        if preview is None:
                            preview = {**item, "nodeId": node_id, "mediaType": key}
    job["outputs_count"] = count
    job["previewable_outputs_count"] = previewable
    if preview is not None:
        job["preview_output"] = preview
    wid = _workflow_id(extra_data)
    if wid is not None:
        job["workflow_id"] = wid
    if detail:
        job["outputs"] = outputs
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def all_jobs(sim: Simulator) -> list[dict[str, Any]]:
    jobs = [_queued_job(item, "pending") for item in sim.queue.pending()]
    jobs += [_queued_job(item, "in_progress") for item in sim.queue.running.values()]
    jobs += [_finished_job(pid, entry, False) for pid, entry in sim.queue.history.items()]
    return jobs


def find_job(sim: Simulator, prompt_id: str) -> dict[str, Any] | None:
    if prompt_id in sim.queue.history:
        return _finished_job(prompt_id, sim.queue.history[prompt_id], True)
    if prompt_id in sim.queue.running:
        return _queued_job(sim.queue.running[prompt_id], "in_progress")
    for item in sim.queue.pending():
        if item.prompt_id == prompt_id:
            return _queued_job(item, "pending")
    return None


def cancel(sim: Simulator, prompt_id: str) -> bool:
    if sim.queue.delete(prompt_id):
        return True
    if prompt_id in sim.queue.running:
        sim.worker.interrupt(prompt_id)
        return True
    return False


def list_jobs(sim: Simulator, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """GET /api/jobs: (status code, body) for the given query parameters."""
    jobs = all_jobs(sim)
    if "status" in query:
        wanted = [s.strip() for s in query["status"].split(",") if s.strip()]
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            return 400, {"error": f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(STATUSES)}"}
        jobs = [j for j in jobs if j["status"] in wanted]
    if "workflow_id" in query:
        jobs = [j for j in jobs if j.get("workflow_id") == query["workflow_id"]]
    descending = query.get("sort_order", "desc") != "asc"
    if query.get("sort_by") == "execution_duration":
        jobs.sort(key=lambda j: j.get("execution_end_time", 0) - j.get("execution_start_time", 0), reverse=descending)
    else:
        jobs.sort(key=lambda j: j.get("create_time") or 0, reverse=descending)
    offset = max(0, int(query.get("offset", "0")))
    total = len(jobs)
    limit = int(query["limit"]) if "limit" in query else None
    page = jobs[offset : offset + limit] if limit is not None else jobs[offset:]
    pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
    return 200, {"jobs": page, "pagination": pagination}


def cancel_many(sim: Simulator, ids: list[Any]) -> tuple[int, dict[str, Any]]:
    """POST /api/jobs/cancel: every id must be a UUID; true if anything was cancelled."""
    invalid = [i for i in ids if not _is_uuid(i)]
    if invalid:
        return 400, {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}
    results = [cancel(sim, i) for i in ids]
    return 200, {"cancelled": any(results)}


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
