from datetime import UTC, datetime

import msgspec
import pytest

from vibewave.contracts.models import ComfyUIRequest, RequestStatus, WorkflowInput, WorkflowResult

pytestmark = pytest.mark.unit


def test_api_document_workflow_input_example_decodes():
    body = (
        b'{"prompt": "A beautiful landscape with mountains and a lake", "negative_prompt": "blurry, low quality,'
        b' distorted", "width": 1024, "height": 1024, "seed": 12345, "steps": 4}'
    )
    data = msgspec.json.decode(body, type=WorkflowInput)
    assert data.workflow_inputs() == {
        "prompt": "A beautiful landscape with mountains and a lake",
        "negative_prompt": "blurry, low quality, distorted",
        "width": 1024,
        "height": 1024,
        "seed": 12345,
        "steps": 4,
    }


def test_missing_prompt_and_unknown_fields_are_rejected():
    with pytest.raises(msgspec.ValidationError, match="prompt"):
        msgspec.json.decode(b'{"width": 1024}', type=WorkflowInput)
    with pytest.raises(msgspec.ValidationError, match="colour"):
        msgspec.json.decode(b'{"prompt": "x", "colour": 1}', type=WorkflowInput)


def test_comfyui_request_has_the_api_document_shape():
    request = ComfyUIRequest(
        id="req-12345",
        workflow_name="comfyui_image_qwen",
        inputs={"prompt": "A beautiful landscape", "seed": 12345},
        status=RequestStatus.COMPLETED,
        pod_id="pod-67890",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        updated_at=datetime(2024, 1, 1, 0, 5, tzinfo=UTC),
        result=WorkflowResult(success=True, files=["qwen_12345_001.png"]),
    )
    encoded = msgspec.json.decode(msgspec.json.encode(request))
    documented = {"id", "workflow_name", "inputs", "status", "pod_id", "created_at", "updated_at", "result", "error"}
    assert documented <= set(encoded)
    additions = {
        "attempts",
        "progress",
        "queue_position",
        "eta_seconds",
        "timings",
        "gpu_seconds",
        "cost",
        "waiting_reason",
    }
    assert set(encoded) - documented == additions, "only additive fields beyond the document"
    assert encoded["created_at"] == "2024-01-01T00:00:00Z"
    assert encoded["updated_at"] == "2024-01-01T00:05:00Z"
    assert encoded["status"] == "completed"
    assert encoded["result"]["files"] == ["qwen_12345_001.png"]
    assert encoded["error"] is None
