"""`contracts` is schemas only: importing all of it loads no I/O library (the design's rule)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_contracts_import_no_io_library():
    code = (
        "import sys\n"
        "import vibewave.contracts.events, vibewave.contracts.models, vibewave.contracts.workflows\n"
        "import vibewave.contracts.export\n"
        "io = sorted({m.split('.')[0] for m in sys.modules} & {'nats', 'faststream', 'opentelemetry', 'aiohttp',"
        " 'litestar', 'httpx'})\n"
        "print(','.join(io))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"contracts pulled in {loaded}"
