"""The default mode, `pip`, as it runs on runpod/pytorch: a venv on the volume, aiohttp, torch, requirements.

Nothing is overridden but what cannot happen here: the ComfyUI source is a local .tar.gz laid out like
GitHub's archive (one top directory) whose `main.py` is a small stdlib stand-in that answers
`/system_stats` with the torch it imported, and the torch index (`VIBEWAVE_TORCH_INDEX`) is a local simple
index of empty `torch==2.8.0`/`torchvision`/`torchaudio` wheels, since the real ones are gigabytes. aiohttp
and requests come from PyPI, so the test needs it (it is skipped otherwise). `python3` is Python 3.10 when
this machine has one, so the token proxy runs on 3.10 here, as on the default image.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.integration.pod.harness import Pod
from vibewave.pod.payload import PINNED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAIN_PY = '''\
"""Stands for ComfyUI's main.py in this test: answers /system_stats on --port with the torch it imported."""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--listen")
parser.add_argument("--port", type=int)
parser.add_argument("--extra-model-paths-config")
parser.add_argument("--disable-auto-launch", action="store_true")
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        system = {"comfyui_version": "stand-in", "pytorch_version": torch.__version__, "python": sys.executable}
        body = json.dumps({"system": system, "argv": sys.argv[1:]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print("stand-in ComfyUI on", args.listen, args.port, flush=True)
ThreadingHTTPServer((args.listen, args.port), Handler).serve_forever()
'''
WHEELS = {"torch": "2.8.0", "torchvision": "0.23.0", "torchaudio": "2.8.0"}
PASSED_THROUGH = (
    "PIP_CERT",
    "PIP_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(
            os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/") + "aiohttp/", timeout=10
        ):
            return True
    except OSError:
        return False


def wheel(directory: Path, name: str, version: str) -> Path:
    """An installable, empty wheel whose module says `__version__ = "<version>+stand-in"`."""
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}+stand-in"\n'.encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}-{version}.dist-info/RECORD"] = (
        "\n".join([*record, f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def torch_index(root: Path) -> str:
    """A PEP 503 simple index on disk holding the three torch wheels."""
    for name, version in WHEELS.items():
        project = root / "simple" / name
        project.mkdir(parents=True)
        built = wheel(project, name, version)
        (project / "index.html").write_text(f'<html><body><a href="{built.name}">{built.name}</a></body></html>\n')
    return (root / "simple").as_uri()


def comfyui_archive(path: Path) -> Path:
    """What `https://github.com/comfyanonymous/ComfyUI/archive/<commit>.tar.gz` looks like, in miniature."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {"main.py": MAIN_PY, "requirements.txt": "# the stand-in needs nothing but torch\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"ComfyUI-{PINNED}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


async def test_a_pip_install_builds_the_venv_once_and_a_second_boot_reuses_it(tmp_path: Path) -> None:
    if not pypi_reachable():
        pytest.skip("the pip mode installs aiohttp and requests from PyPI, which is not reachable")
    workspace = tmp_path / "workspace"
    network = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    overrides = {
        "VIBEWAVE_COMFYUI_SOURCE": str(comfyui_archive(tmp_path / "comfyui.tar.gz")),
        "VIBEWAVE_TORCH_INDEX": torch_index(tmp_path / "index"),
        **network,
    }
    async with Pod(tmp_path / "pod-a", workspace, [], pod_id="pip-a", **overrides) as first:
        ready = await first.wait_phase("ready", timeout=500)
        assert ready["install"] == {"skipped": False, "mode": "pip", "comfyui_commit": PINNED}
        code, stats = await first.get("/system_stats")
        assert code == 200, stats
        assert stats["system"]["pytorch_version"] == "2.8.0+stand-in"  # installed into the venv, not the image
        assert stats["system"]["python"] == str(workspace / "venv" / "bin" / "python")
        assert "--extra-model-paths-config" in stats["argv"] and "--disable-auto-launch" in stats["argv"]
        out = first.output()
        assert "creating the venv" in out and "torch is not installed" in out
        assert (await first.get("/system_stats", token=False))[0] == 401
        assert await first.stop() == 0
        await first.wait_gone()
    assert (workspace / "venv" / "pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1

    async with Pod(tmp_path / "pod-b", workspace, [], pod_id="pip-b", **overrides) as second:
        ready = await second.wait_phase("ready", timeout=120)
        assert ready["install"]["skipped"] is True
        out = second.output()
        assert f"ComfyUI {PINNED} already installed on the volume" in out
        assert "pip install" not in out and "creating the venv" not in out
        assert (await second.get("/system_stats"))[1]["system"]["pytorch_version"] == "2.8.0+stand-in"
        assert await second.stop() == 0
        await second.wait_gone()
