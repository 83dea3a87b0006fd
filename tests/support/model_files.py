"""The emulator's model host (`vibewave.runpod_emu.model_host`) on a port of its own, for the pod bootstrap's
tests: files at `<url>/<folder>/<file>`, with the host's Range support, fault switches and counters.

    async with ModelFileServer(tmp_path / "files") as server:
        manifest = server.stand_in_models(QWEN_MANIFEST)  # urls on this server, stand-ins' size and sha256
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from vibewave.runpod_emu.model_host import KIB, FileCounters, ModelHost, stand_in_bytes, stand_in_models

__all__ = ["KIB", "FileCounters", "ModelFileServer", "stand_in_bytes", "stand_in_models"]


class ModelFileServer(ModelHost):
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(root, prefix="")
        self.host = host
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ModelFileServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path}"

    def stand_in_models(
        self, manifest: list[dict[str, Any]], scale: float = 1e-6, *, keep_unknown: bool = False
    ) -> list[dict[str, Any]]:
        """`stand_in_models` into this server's directory, with urls on this server."""
        return stand_in_models(manifest, self.root, scale, base_url=self.url, keep_unknown=keep_unknown)
