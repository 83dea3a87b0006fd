"""Validation against the 400 bodies recorded from ComfyUI 0.33 (transcript 07)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vibewave.comfyui_sim.catalogue import Catalogue
from vibewave.comfyui_sim.config import DEFAULT_MODELS
from vibewave.comfyui_sim.validation import validate_prompt

pytestmark = pytest.mark.unit

GRAPHS = Path(__file__).parent / "graphs"
QWEN_ONLY = {
    "diffusion_models": ["qwen_image_fp8_e4m3fn.safetensors"],
    "text_encoders": ["qwen_2.5_vl_7b_fp8_scaled.safetensors"],
    "vae": ["qwen_image_vae.safetensors"],
    "loras": ["Qwen-Image-Lightning-4steps-V1.0.safetensors", "Qwen-Image-Lightning-8steps-V1.0.safetensors"],
}
EMPTY_IMAGE_WIDTH = ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(QWEN_ONLY, tmp_path)


def basic(**image_inputs: Any) -> dict[str, Any]:
    inputs = {"width": 512, "height": 512, "batch_size": 1, "color": 16744448, **image_inputs}
    return {
        "1": {"class_type": "EmptyImage", "inputs": {k: v for k, v in inputs.items() if v is not None}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "golden_basic"}},
    }


def failed(node_errors: dict[str, Any], details: str = "") -> dict[str, Any]:
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        },
        "node_errors": node_errors,
    }


def body(catalogue: Catalogue, prompt: dict[str, Any]) -> dict[str, Any]:
    result = validate_prompt(catalogue, prompt)
    assert not result.ok
    return {"error": result.error, "node_errors": result.node_errors}


def test_invalid_input_type(catalogue: Catalogue) -> None:
    assert body(catalogue, basic(width="abc")) == failed(
        {
            "1": {
                "errors": [
                    {
                        "type": "invalid_input_type",
                        "message": "Failed to convert an input value to a INT value",
                        "details": "width, abc, invalid literal for int() with base 10: 'abc'",
                        "extra_info": {
                            "input_name": "width",
                            "input_config": EMPTY_IMAGE_WIDTH,
                            "received_value": "abc",
                            "exception_message": "invalid literal for int() with base 10: 'abc'",
                        },
                    }
                ],
                "dependent_outputs": ["2"],
                "class_type": "EmptyImage",
            }
        }
    )


def test_required_input_missing(catalogue: Catalogue) -> None:
    errors = body(catalogue, basic(height=None))["node_errors"]["1"]["errors"]
    assert errors == [
        {
            "type": "required_input_missing",
            "message": "Required input is missing",
            "details": "height",
            "extra_info": {"input_name": "height"},
        }
    ]


@pytest.mark.parametrize(
    ("width", "kind", "message"),
    [
        (99999, "value_bigger_than_max", "Value 99999 bigger than max of 16384"),
        (0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
    ],
)
def test_min_max(catalogue: Catalogue, width: int, kind: str, message: str) -> None:
    errors = body(catalogue, basic(width=width))["node_errors"]["1"]["errors"]
    assert errors == [
        {
            "type": kind,
            "message": message,
            "details": "width",
            "extra_info": {"input_name": "width", "input_config": EMPTY_IMAGE_WIDTH, "received_value": width},
        }
    ]


def test_missing_node_type(catalogue: Catalogue) -> None:
    prompt = basic()
    prompt["3"] = {"class_type": "NoSuchNodeClass", "inputs": {}, "_meta": {"title": "My Missing Node"}}
    assert body(catalogue, prompt) == {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'My Missing Node' not found. The custom node may not be installed.",
            "details": "Node ID '#3'",
            "extra_info": {"node_id": "3", "class_type": "NoSuchNodeClass", "node_title": "My Missing Node"},
        },
        "node_errors": {},
    }
    prompt["3"] = {"inputs": {}}
    assert body(catalogue, prompt)["error"] == {
        "type": "missing_node_type",
        "message": "Node 'ID #3' has no class_type. The workflow may be corrupted or a custom node is missing.",
        "details": "Node ID '#3'",
        "extra_info": {"node_id": "3", "class_type": None, "node_title": None},
    }


def test_value_not_in_list_and_chain_dependents(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 640, "height": 480, "batch_size": 2, "color": 1}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {"image": ["1", 0], "upscale_method": "bogus", "width": 320, "height": 240, "crop": "disabled"},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "golden/chain"}},
    }
    options = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert body(catalogue, prompt) == failed(
        {
            "2": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"upscale_method: 'bogus' not in {options}",
                        "extra_info": {
                            "input_name": "upscale_method",
                            "input_config": [options, {}],
                            "received_value": "bogus",
                        },
                    }
                ],
                "dependent_outputs": ["5"],
                "class_type": "ImageScale",
            }
        }
    )


def test_return_type_mismatch_details_on_output_node(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    detail = "images, received_type(LATENT) mismatch input_type(IMAGE)"
    assert body(catalogue, prompt) == failed(
        {
            "2": {
                "errors": [
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": detail,
                        "extra_info": {
                            "input_name": "images",
                            "input_config": ["IMAGE", {"tooltip": "The images to save."}],
                            "received_type": "LATENT",
                            "linked_node": ["1", 0],
                        },
                    }
                ],
                "dependent_outputs": ["2"],
                "class_type": "SaveImage",
            }
        },
        details=f"Return type mismatch between linked nodes: {detail}",
    )


def test_bad_link_and_missing_link_target(catalogue: Catalogue) -> None:
    prompt = basic()
    prompt["2"]["inputs"]["images"] = ["1", 0, 5]
    out = body(catalogue, prompt)
    assert out["error"]["details"] == ("Bad linked input, must be a length-2 list of [node_id, slot_index]: images")
    assert out["node_errors"]["2"]["errors"][0]["type"] == "bad_linked_input"

    prompt["2"]["inputs"]["images"] = ["99", 0]
    out = body(catalogue, prompt)
    assert out["error"]["details"] == "Exception when validating node: '99'"
    error = out["node_errors"]["2"]["errors"][0]
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "'99'"
    assert error["extra_info"]["exception_type"] == "KeyError"


def test_no_outputs_and_custom_validation(catalogue: Catalogue) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    assert body(catalogue, prompt)["error"] == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert body(catalogue, prompt)["node_errors"]["1"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "image - Invalid image file: does_not_exist.png",
            "extra_info": {"input_name": "image"},
        }
    ]


def test_missing_model_files_report_every_loader(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "not_there.safetensors", "weight_dtype": "default"}},
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "nope.safetensors", "type": "qwen_image", "device": "default"},
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "hi", "clip": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1328, "height": 1328, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 1,
                "steps": 20,
                "cfg": 4.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "positive": ["3", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": "missing_vae.safetensors"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "x"}},
    }
    out = body(catalogue, prompt)
    assert list(out["node_errors"]) == ["1", "2", "6"]
    vae = out["node_errors"]["6"]["errors"][0]
    assert vae["details"] == (
        "vae_name: 'missing_vae.safetensors' not in ['qwen_image_vae.safetensors', 'pixel_space']"
    )
    assert vae["extra_info"]["input_config"] == [["qwen_image_vae.safetensors", "pixel_space"], {}]
    assert out["node_errors"]["1"]["dependent_outputs"] == ["8"]


def test_partial_failure_keeps_valid_output(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "golden_partial"}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bad"}},
    }
    result = validate_prompt(catalogue, prompt)
    assert result.ok
    assert result.outputs == ["2"]
    assert result.node_errors["3"]["errors"][0]["message"] == "Value 99 bigger than max of 31"
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_values_are_coerced_in_place(catalogue: Catalogue) -> None:
    prompt = basic(width="640", height=480.0)
    assert validate_prompt(catalogue, prompt).ok
    assert prompt["1"]["inputs"]["width"] == 640
    assert prompt["1"]["inputs"]["height"] == 480


@pytest.mark.parametrize(
    "name",
    [
        "qwen_image_api.json",
        "qwen_image_lightning4_api.json",
        "qwen_image_lightning8_api.json",
        "wan22_t2v_5b_api.json",
        "wan22_t2v_14b_api_simple.json",
    ],
)
def test_shipped_graphs_validate_with_default_models(tmp_path: Path, name: str) -> None:
    prompt = json.loads((GRAPHS / name).read_text())
    result = validate_prompt(Catalogue(DEFAULT_MODELS, tmp_path), prompt)
    assert result.ok, result.node_errors
    assert result.node_errors == {}


def test_dynamic_combo_sub_inputs_are_validated(catalogue: Catalogue) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 4, "color": 1}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12.0}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["2", 0],
                "filename_prefix": "video/x",
                "format": "mp4",
                "codec": "h264",
                "codec.encoding": "re-encode",
                "codec.encoding.crf": 99.0,
            },
        },
    }
    out = body(catalogue, prompt)
    error = out["node_errors"]["3"]["errors"][0]
    assert (error["type"], error["details"]) == ("value_bigger_than_max", "codec.encoding.crf")
