"""An `image` input takes an upload's name or an http(s) URL, and only its shape is checked here (the
api checks whose the upload is and where the URL points; the executor fetches it)."""

from __future__ import annotations

import pytest

from vibewave.contracts.workflows import InvalidInput, image_inputs, is_stored_image, is_upload, load_catalog

pytestmark = pytest.mark.unit

I2V = load_catalog()["comfyui_video_wan22_i2v"]
UPLOAD = "upload_0123456789abcdef.png"


@pytest.mark.parametrize("value", [UPLOAD, "upload_fedcba9876543210.jpg", "upload_00000000000000aa.webp",
                                   "https://example.com/still.png", "http://127.0.0.1:8080/x.png"])  # fmt: skip
def test_an_upload_name_or_a_url_is_taken(value: str) -> None:
    resolved = I2V.resolve_inputs({"prompt": "a slow pan", "image": value})
    assert resolved["image"] == value
    assert image_inputs(I2V, resolved) == {"image": value}
    assert I2V.render(resolved)["56"]["inputs"]["image"] == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "image: is required"),
        (7, "image: must be a string"),
        ("still.bmp", "image: must be a stored image's name"),
        ("outputs/still.png", "image: must be a stored image's name"),
        ("upload_0123456789abcdef.gif", "image: must be a stored image's name"),
        ("../upload_0123456789abcdef.png", "image: must be a stored image's name"),
        ("a..b.png", "image: must be a stored image's name"),
        ("ftp://example.com/x.png", "image: must be a stored image's name"),
        ("file:///etc/passwd", "image: must be a stored image's name"),
        ("https://example.com/\nx.png", "image: must be a stored image's name"),
        ("https://example.com/" + "x" * 2100, "image: must be at most 2048 characters"),
    ],
)
def test_anything_else_is_refused_naming_the_input(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        I2V.resolve_inputs({"prompt": "a slow pan", "image": value})
    assert str(info.value).startswith(message) and info.value.field == "image"


def test_upload_names_are_recognised() -> None:
    assert is_upload(UPLOAD) and not is_upload("https://example.com/" + UPLOAD) and not is_upload(UPLOAD + "x")


@pytest.mark.parametrize("value", [UPLOAD, "qwen_12345_001.png", "wan_i2v_7_002.webp", "still.jpeg"])
def test_stored_images_are_uploads_and_generated_ones(value: str) -> None:
    assert is_stored_image(value) and I2V.resolve_inputs({"prompt": "x", "image": value})["image"] == value
    assert not is_stored_image("https://example.com/" + value)


def test_the_image_to_video_graph_starts_from_its_load_image() -> None:
    graph = I2V.render(I2V.resolve_inputs({"prompt": "x", "image": UPLOAD}, "preview"))
    assert graph["56"]["class_type"] == "LoadImage"
    assert graph["55"]["inputs"]["start_image"] == ["56", 0]
    assert {m.key for m in I2V.models} == {m.key for m in load_catalog()["comfyui_video_wan22"].models}
    assert image_inputs(load_catalog()["comfyui_video_wan22"], {"prompt": "x"}) == {}
