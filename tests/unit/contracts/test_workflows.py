import pytest

from vibewave.contracts.models import DEFAULT_WORKFLOW
from vibewave.contracts.workflows import InvalidInput, load_catalog

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
    assert qwen.graph["6"]["inputs"]["text"] != "a lake", "rendering must not change the template"


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
