import json
import re
import shutil

import pytest

from vibewave.contracts.models import DEFAULT_WORKFLOW
from vibewave.contracts.workflows import SHIPPED_DIR, InvalidInput, load_catalog, load_workflow

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def qwen():
    return load_catalog()[DEFAULT_WORKFLOW]


def test_defaults_fill_in_and_a_missing_seed_is_drawn(qwen):
    resolved = qwen.resolve_inputs({"prompt": "a lake"})
    assert resolved["width"] == 1024 and resolved["height"] == 1024 and resolved["steps"] == 4
    assert resolved["negative_prompt"] == ""
    assert 0 <= resolved["seed"] <= 2**64 - 1


def test_given_seed_is_kept(qwen):
    assert qwen.resolve_inputs({"prompt": "a lake", "seed": 12345})["seed"] == 12345


def test_render_writes_each_input_into_its_node(qwen):
    inputs = qwen.resolve_inputs(
        {"prompt": "a lake", "negative_prompt": "blurry", "width": 768, "height": 512, "seed": 7, "steps": 4}
    )
    graph = qwen.render(inputs)
    assert graph["6"]["inputs"]["text"] == "a lake"
    assert graph["7"]["inputs"]["text"] == "blurry"
    assert (graph["58"]["inputs"]["width"], graph["58"]["inputs"]["height"]) == (768, 512)
    assert (graph["3"]["inputs"]["seed"], graph["3"]["inputs"]["steps"]) == (7, 4)
    assert graph["6"]["inputs"]["clip"] == ["38", 0]
    assert qwen.graphs["graph_lightning4.json"]["6"]["inputs"]["text"] != "a lake", "templates stay unchanged"


@pytest.mark.parametrize(
    ("given", "field", "reason"),
    [
        ({}, "prompt", "is required"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": "x", "width": 1000}, "width", "multiple of 16"),
        ({"prompt": "x", "height": 128}, "height", "at least 256"),
        ({"prompt": "x", "steps": 0}, "steps", "at least 1"),
        ({"prompt": "x", "seed": -1}, "seed", "at least 0"),
        ({"prompt": "x", "width": "big"}, "width", "must be a number"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown input"),
    ],
)
def test_invalid_inputs_name_the_field(qwen, given, field, reason):
    with pytest.raises(InvalidInput) as info:
        qwen.resolve_inputs(given)
    assert info.value.field == field
    assert reason in str(info.value)


def test_operator_directory_adds_and_overrides(tmp_path, qwen):
    folder = tmp_path / "my_flow"
    folder.mkdir()
    (folder / "graph.json").write_text('{"1": {"class_type": "EmptyImage", "inputs": {"width": 64}}}')
    (folder / "workflow.json").write_text(
        '{"name": "my_flow", "file_prefix": "mine", "graph": "graph.json",'
        ' "inputs": {"width": {"type": "int", "node": "1", "field": "width", "default": 64}}}'
    )
    catalog = load_catalog(tmp_path)
    assert set(catalog) >= {"my_flow", DEFAULT_WORKFLOW}
    assert catalog["my_flow"].render(catalog["my_flow"].resolve_inputs({"width": 96}))["1"]["inputs"]["width"] == 96


@pytest.mark.parametrize(
    ("steps", "variant", "lora", "cfg"),
    [
        (4, "lightning4", "Qwen-Image-Lightning-4steps-V1.0.safetensors", 1.0),
        (8, "lightning8", "Qwen-Image-Lightning-8steps-V1.0.safetensors", 1.0),
        (12, "distill", None, 1.0),
        (20, "base", None, 4.0),
    ],
)
def test_step_count_picks_the_graph_made_for_it(qwen, steps, variant, lora, cfg):
    inputs = qwen.resolve_inputs({"prompt": "x", "steps": steps})
    assert qwen.variant_for(inputs).name == variant
    graph = qwen.render(inputs)
    assert graph["3"]["inputs"]["steps"] == steps and graph["3"]["inputs"]["cfg"] == cfg
    assert graph.get("73", {}).get("inputs", {}).get("lora_name") == lora
    if variant == "distill":
        assert graph["37"]["inputs"]["unet_name"] == "qwen_image_distill_full_fp8_e4m3fn.safetensors"


def test_presets_fill_inputs_the_caller_left_out(qwen):
    assert qwen.resolve_inputs({"prompt": "x"}, "quality")["steps"] == 8
    assert qwen.resolve_inputs({"prompt": "x", "steps": 5}, "ultra")["steps"] == 5
    assert qwen.timeout_for("ultra") > qwen.timeout_for("fast")
    with pytest.raises(InvalidInput) as info:
        qwen.resolve_inputs({"prompt": "x"}, "turbo")
    assert info.value.field == "preset"


def test_video_length_must_be_4k_plus_1():
    wan = load_catalog()["comfyui_video_wan22"]
    assert wan.resolve_inputs({"prompt": "x", "length": 49})["length"] == 49
    with pytest.raises(InvalidInput, match="4k\\+1"):
        wan.resolve_inputs({"prompt": "x", "length": 48})
    rendered = wan.render(wan.resolve_inputs({"prompt": "x"}, "preview"))
    assert rendered["55"]["inputs"]["length"] == 49
    assert rendered["7"]["inputs"]["text"], "an omitted negative prompt keeps the template's"


def test_catalog_picks_up_a_folder_added_while_running(tmp_path):
    from vibewave.contracts.workflows import WorkflowCatalog

    catalog = WorkflowCatalog(tmp_path, check_interval_s=0)
    assert catalog.get("late_flow") is None
    folder = tmp_path / "late_flow"
    folder.mkdir()
    (folder / "graph.json").write_text('{"1": {"class_type": "EmptyImage", "inputs": {"width": 64}}}')
    (folder / "workflow.json").write_text(
        '{"name": "late_flow", "file_prefix": "late", "graph": "graph.json",'
        ' "inputs": {"width": {"type": "int", "node": "1", "field": "width", "default": 64}}}'
    )
    assert catalog.get("late_flow") is not None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "workflow.json").write_text("{not json")
    assert "late_flow" in catalog.names(), "a broken folder does not hide the others"


def test_every_shipped_workflow_declares_the_model_files_its_graphs_load():
    """load_catalog refuses a models.json that differs from what a variant's graph loads; here: every
    shipped workflow has one, and every checksum it gives is a sha256."""
    catalog = load_catalog()
    for workflow in catalog.values():
        assert workflow.models, f"{workflow.name} declares no models"
        for model in workflow.models:
            assert model.url.startswith("https://huggingface.co/") and "/resolve/" in model.url
            assert model.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", model.sha256)
            assert model.sha256 is not None or model.source, "an unpublished checksum says so"


def test_the_variant_picks_the_model_files_a_request_needs():
    qwen = load_catalog()["comfyui_image_qwen"]
    files = {
        s: {m.file for m in qwen.models_for(qwen.resolve_inputs({"prompt": "x", "steps": s}))} for s in (4, 8, 12, 30)
    }
    assert "Qwen-Image-Lightning-4steps-V1.0.safetensors" in files[4] and not files[4] & {
        "Qwen-Image-Lightning-8steps-V1.0.safetensors",
        "qwen_image_distill_full_fp8_e4m3fn.safetensors",
    }
    assert "Qwen-Image-Lightning-8steps-V1.0.safetensors" in files[8]
    assert files[12] == {
        "qwen_image_distill_full_fp8_e4m3fn.safetensors",
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "qwen_image_vae.safetensors",
    }
    assert files[30] == {
        "qwen_image_fp8_e4m3fn.safetensors",
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "qwen_image_vae.safetensors",
    }
    core = sum(m.size or 0 for m in qwen.models if not m.optional)
    assert core == 31_768_063_166, "the Qwen set of the reference (fp8, text encoder, VAE, 8-step LoRA)"


def test_a_models_json_that_does_not_match_the_graph_is_refused(tmp_path):
    folder = tmp_path / "wf"
    shutil.copytree(SHIPPED_DIR / "comfyui_video_wan22", folder)
    models = json.loads((folder / "models.json").read_text())
    (folder / "models.json").write_text(json.dumps(models[:-1]))
    with pytest.raises(ValueError, match=r"models\.json declares"):
        load_workflow(folder)
