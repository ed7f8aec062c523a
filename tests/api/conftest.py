"""Server fixtures: the fake-engine server (module-scoped) and in-process apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.server_process import ServerProcess


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fake-server") / "server.log"
    server = ServerProcess.fake(log_path=log).start()
    yield server
    server.stop()


@pytest.fixture
def tmp_log(tmp_path: Path) -> Path:
    return tmp_path / "server.log"
