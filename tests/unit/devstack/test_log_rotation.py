"""Every log Vibewave writes under its home is size-bounded: the services', the devstack's, NATS's."""

import logging
from pathlib import Path

import pytest

from vibewave.devstack.nats_server import EmbeddedNats
from vibewave.runtime import logs

pytestmark = pytest.mark.unit


def test_a_services_log_file_rotates_and_keeps_a_bounded_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(logs, "LOG_FILE_BYTES", 2_000)
    root = logging.getLogger()
    level = root.level
    try:
        logs.configure_logging("scheduler", "INFO", tmp_path)
        for n in range(500):
            logging.getLogger("vibewave.scheduler").info("line %d of a long run", n)
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_vibewave_handler", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["scheduler.log"] + [f"scheduler.log.{n}" for n in range(1, logs.LOG_FILE_BACKUPS + 1)]
    assert all((tmp_path / name).stat().st_size <= 2_000 for name in files)
    assert "line 499" in (tmp_path / "scheduler.log").read_text()


def test_the_embedded_nats_server_rotates_its_log(tmp_path: Path):
    server = EmbeddedNats(tmp_path)
    command = server.command()
    config = Path(command[command.index("-c") + 1])
    assert "logfile_size_limit: 20MB" in config.read_text() and "logfile_max_num: 3" in config.read_text()
    assert command[command.index("-l") + 1] == str(server.log_path)
