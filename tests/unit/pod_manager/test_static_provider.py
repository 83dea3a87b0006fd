import pytest

from vibewave.pod_manager.providers.base import CapacityError, Conflict, NoFittingGpu, PodNotFound, ProviderState
from vibewave.pod_manager.providers.static import StaticProvider
from vibewave.runtime.process import ConfigurationError

pytestmark = pytest.mark.unit


async def test_each_url_is_one_pod_slot():
    provider = StaticProvider(["http://gpu-a:8188/", "http://gpu-b:8188"])
    assert provider.capacity == 2
    first = await provider.create("vibewave-1")
    second = await provider.create("vibewave-2")
    assert (first.comfyui_url, second.comfyui_url) == ("http://gpu-a:8188", "http://gpu-b:8188")
    assert first.state == ProviderState.RUNNING and first.ip == "gpu-a"
    with pytest.raises(CapacityError):
        await provider.create("vibewave-3")
    await provider.stop(first.id)
    assert (await provider.get(first.id)).state == ProviderState.STOPPED  # type: ignore[union-attr]
    assert (await provider.start(first.id)).comfyui_url == "http://gpu-a:8188"
    await provider.terminate(second.id)
    assert await provider.get(second.id) is None
    assert (await provider.create("vibewave-4")).comfyui_url == "http://gpu-b:8188", "the slot is free again"
    with pytest.raises(PodNotFound):
        await provider.stop("static-9")
    assert (await provider.catalogue("account"))["servers"] == ["http://gpu-a:8188", "http://gpu-b:8188"]


async def test_static_servers_serve_every_workflow_unless_told_their_gpu_memory():
    provider = StaticProvider(["http://gpu-a:8188"])
    assert (await provider.create("vibewave-48g-1", 48)).gpu_memory_gb is None
    small = StaticProvider(["http://gpu-b:8188"], gpu_memory_gb=24)
    with pytest.raises(NoFittingGpu, match="24 GB"):
        await small.create("vibewave-48g-2", 48)
    pod = await small.create("vibewave-3")
    with pytest.raises(Conflict, match="not restarted"):
        await small.restart(pod.id)


def test_static_needs_urls():
    with pytest.raises(ConfigurationError, match="STATIC_COMFYUI_URLS"):
        StaticProvider([])
