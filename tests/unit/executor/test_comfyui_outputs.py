import pytest

from vibewave.executor.comfyui import OutputRef, describe_execution_error, describe_rejection, output_refs

pytestmark = pytest.mark.unit


def test_outputs_of_any_key_are_collected_and_previews_skipped():
    outputs = {
        "60": {"images": [{"filename": "Qwen_00001_.png", "subfolder": "", "type": "output"}]},
        "58": {
            "images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
            "animated": [True],
        },
        "70": {"audio": [{"filename": "song_00001_.flac", "subfolder": "audio", "type": "output"}]},
        "71": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
        "72": {"text": ["96"]},
    }
    assert output_refs(outputs) == [
        OutputRef("60", "Qwen_00001_.png", "", "output"),
        OutputRef("58", "ComfyUI_00001_.mp4", "video", "output"),
        OutputRef("70", "song_00001_.flac", "audio", "output"),
    ]


def test_rejection_names_each_node_and_reason():
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                  "details": "", "extra_info": {}},
        "node_errors": {"1": {"errors": [{"type": "value_bigger_than_max", "message": "Value bigger than max",
                                          "details": "width, 99999 > 16384"}], "class_type": "EmptyImage"}},
    }  # fmt: skip
    assert describe_rejection(body) == (
        "ComfyUI rejected the workflow: Prompt outputs failed validation "
        "[node 1 (EmptyImage): Value bigger than max: width, 99999 > 16384]"
    )


def test_out_of_memory_is_told_apart_from_other_errors():
    oom = {
        "node_id": "8",
        "node_type": "VAEDecode",
        "exception_type": "torch.OutOfMemoryError",
        "exception_message": "Allocation on device\nThis error means you ran out of memory on your GPU.",
    }
    other = {
        "node_id": "1",
        "node_type": "EmptyImage",
        "exception_type": "RuntimeError",
        "exception_message": "[enforce fail at alloc_cpu.cpp:127] can't allocate memory\n",
    }
    assert describe_execution_error(oom).startswith("out of memory in node 8 (VAEDecode): torch.OutOfMemoryError")
    assert describe_execution_error(other).startswith("execution error in node 1 (EmptyImage): RuntimeError: [enforce")
