import pytest

from vibewave.pod_manager.providers.base import CapacityError, PodNotFound, ProviderState
from vibewave.pod_manager.providers.static import StaticProvider

pytestmark = pytest.mark.unit


async def test_each_url_is_one_pod_slot():
    provider = StaticProvider(["http://gpu-a:8188/", "http://gpu-b:8188"])
    first = await provider.create("vibewave-wf-1", "wf")
    second = await provider.create("vibewave-wf-2", "wf")
    assert (first.comfyui_url, second.comfyui_url) == ("http://gpu-a:8188", "http://gpu-b:8188")
    assert first.state == ProviderState.RUNNING and first.ip == "gpu-a"
    with pytest.raises(CapacityError):
        await provider.create("vibewave-wf-3", "wf")
    await provider.stop(first.id)
    assert (await provider.get(first.id)).state == ProviderState.STOPPED  # type: ignore[union-attr]
    assert (await provider.start(first.id)).comfyui_url == "http://gpu-a:8188"
    await provider.terminate(second.id)
    assert await provider.get(second.id) is None
    assert (await provider.create("vibewave-wf-4", "wf")).comfyui_url == "http://gpu-b:8188", "the slot is free again"
    with pytest.raises(PodNotFound):
        await provider.stop("static-9")
    assert (await provider.catalogue("account"))["servers"] == ["http://gpu-a:8188", "http://gpu-b:8188"]


def test_static_needs_urls():
    with pytest.raises(ValueError, match="STATIC_COMFYUI_URLS"):
        StaticProvider([])
