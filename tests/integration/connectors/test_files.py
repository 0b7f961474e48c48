"""The files connector: a local folder, and the OpenSSH server scripts/sshd.sh starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import files
from lobflows.connectors.base import CallContext
from lobflows.runtime import Runtime
from lobflows.secrets import SecretStore
from lobflows.settings import Settings
from lobflows.triggers.poll import Poller
from tests import support

pytestmark = pytest.mark.integration

SSHD_PORT = 2222
SFTP_USER = "lobflows-sftp"
SFTP_HOME = Path("/var/lib/lobflows-sftp")
# Where scripts/sshd.sh keeps the server's keys (shared by every checkout).
SSHD_STATE = Path(os.environ.get("LOBFLOWS_SSHD_STATE", "/var/lib/lobflows-test/sshd"))
CONTEXT = CallContext(run_id="r1", flow="f", step="s", attempt=1, timeout_seconds=20)
RECORDS = [
    {"id": "1", "name": "Ada", "city": "London"},
    {"id": "2", "name": "Grace", "city": "Arlington"},
]
POLL_FLOW = """flow: new-files
card:
  trigger: a new CSV file in the inbox folder
  data: {entity: file, sensitivity: internal}
  transform: none
  target: the run store
  on_failure: poll again next interval
  owner: team@example.com
trigger:
  poll:
    every_seconds: 60
    call: inbox.list
    with: {pattern: "*.csv", since_mtime: "{{ watermark }}"}
    items: "{{ result }}"
    id: "{{ item.path }}-{{ item.mtime }}"
    watermark: "{{ item.mtime }}"
    start: 0
steps:
  - id: seen
    map: {path: "{{ input.path }}"}
"""


def folder_connector(root: Path) -> files.FilesConnector:
    settings = files.FilesSettings(folder=str(root))
    return files.FilesConnector("inbox", settings, SecretStore())


async def call(connector: Any, action: str, params: dict[str, Any]) -> Any:
    return await connector.call(action, params, CONTEXT)


# -- local folder ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("out/people.csv", None),  # format from the suffix
        ("out/people.xlsx", None),
        ("out/people.jsonl", "jsonl"),  # format given
    ],
)
async def test_folder_records_written_read_back_the_same(
    tmp_path: Path, path: str, fmt: str | None
):
    (tmp_path / "out").mkdir()
    connector = folder_connector(tmp_path)

    written = await call(
        connector, "write", {"path": path, "format": fmt, "records": RECORDS}
    )
    read = await call(connector, "read", {"path": path})

    assert written["path"] == path and written["size"] > 0
    assert read == {"records": RECORDS, "rejected": []}
    assert [p.name for p in (tmp_path / Path(path).parent).iterdir()] == [
        Path(path).name
    ]  # no temporary file left beside it


async def test_folder_json_and_text_written_read_back(tmp_path: Path):
    connector = folder_connector(tmp_path)

    await call(connector, "write", {"path": "a.json", "data": {"n": [1, 2]}})
    await call(connector, "write", {"path": "a.txt", "text": "héllo"})

    assert await call(connector, "read", {"path": "a.json"}) == {"data": {"n": [1, 2]}}
    assert await call(connector, "read", {"path": "a.txt"}) == {"text": "héllo"}


@pytest.mark.parametrize(
    "path",
    [
        "../outside.csv",  # climbs out
        "/etc/passwd",  # absolute
        "inner/../../outside.csv",  # climbs out through a folder
        "link/passwd",  # a symlink to a folder outside
    ],
)
async def test_folder_path_leaving_the_root_is_refused(tmp_path: Path, path: str):
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "link").symlink_to("/etc")
    connector = folder_connector(root)

    with pytest.raises(errors.StepInputError):
        await call(connector, "read", {"path": path, "format": "text"})
    with pytest.raises(errors.StepInputError):
        await call(connector, "write", {"path": path, "format": "text", "text": "x"})


async def test_folder_read_over_the_size_limit_is_refused(tmp_path: Path):
    (tmp_path / "big.txt").write_text("x" * 100)
    settings = files.FilesSettings(folder=str(tmp_path), max_read_bytes=10)
    connector = files.FilesConnector("inbox", settings, SecretStore())

    with pytest.raises(errors.StepInputError, match="max_read_bytes"):
        await call(connector, "read", {"path": "big.txt"})


async def test_folder_list_since_mtime_sorted_by_mtime_then_name(tmp_path: Path):
    for name, mtime in [("b.csv", 200), ("a.csv", 200), ("old.csv", 100)]:
        (tmp_path / name).write_text("id\n1\n")
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / "note.txt").write_text("")
    (tmp_path / ".hidden.csv").write_text("")
    connector = folder_connector(tmp_path)

    listed = await call(connector, "list", {"pattern": "*.csv", "since_mtime": 150})

    assert [(f["path"], f["mtime"]) for f in listed] == [
        ("a.csv", 200.0),
        ("b.csv", 200.0),
    ]


async def test_folder_move_and_delete(tmp_path: Path):
    (tmp_path / "done").mkdir()
    (tmp_path / "a.txt").write_text("a")
    connector = folder_connector(tmp_path)

    await call(connector, "move", {"path": "a.txt", "to": "done/a.txt"})
    await call(connector, "delete", {"path": "done/a.txt"})

    assert list(tmp_path.rglob("*.txt")) == []
    with pytest.raises(errors.RecordFileError, match="no such file"):
        await call(connector, "delete", {"path": "done/a.txt"})


async def test_poll_over_list_starts_one_run_per_new_file_never_twice(
    store_url: str, tmp_path: Path
):
    # Given a flow polling a folder that holds one CSV file
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    project = tmp_path / "flows"
    project.mkdir()
    (project / "new-files.yaml").write_text(POLL_FLOW)
    (project / "connections.yaml").write_text(
        f"connections:\n  inbox: {{type: files, folder: '{inbox}'}}\n"
    )
    _touch(inbox / "one.csv", 1000)
    now = [1_000_000.0]
    runtime = await Runtime.open(Settings(database_url=store_url), project)
    try:
        poller = Poller(runtime.engine, now=lambda: now[0])

        # When it polls, then polls again after a second file arrives
        first = await poller.tick()
        _touch(inbox / "two.csv", 1000)  # the same mtime as the watermark
        _touch(inbox / "skip.txt", 2000)
        now[0] += 61
        second = await poller.tick()
        now[0] += 61
        third = await poller.tick()
        runs = await runtime.store.list_runs(flow="new-files")
    finally:
        await runtime.close()

    # Then each file started one run, and nothing started twice
    assert (len(first), len(second), third) == (1, 1, [])
    assert sorted(r.input["path"] for r in runs) == ["one.csv", "two.csv"]


def _touch(path: Path, mtime: float) -> None:
    path.write_text("id\n1\n")
    os.utime(path, (mtime, mtime))


# -- SFTP --------------------------------------------------------------------


def _sshd_is_up() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", SSHD_PORT)) == 0


@pytest.fixture(scope="session")
def sshd() -> Iterator[None]:
    if not _sshd_is_up():
        script = support.REPO / "scripts" / "sshd.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"scripts/sshd.sh failed: {done.stderr}")
    yield


@pytest.fixture
def sftp_root(sshd: None) -> Iterator[str]:
    """A fresh folder in the SFTP user's home, removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    folder = SFTP_HOME / name
    folder.mkdir()
    shutil.chown(folder, SFTP_USER, SFTP_USER)
    yield name
    shutil.rmtree(folder, ignore_errors=True)


def host_key_line() -> str:
    key = (SSHD_STATE / "host_ed25519_key.pub").read_text().split()
    return f"[127.0.0.1]:{SSHD_PORT} {key[0]} {key[1]}"


def sftp_connector(root: str, **overrides: Any) -> files.FilesConnector:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": SSHD_PORT,
        "username": SFTP_USER,
        "key_secret": "sftp_key",
        "known_hosts": host_key_line(),
        "root": root,
        **overrides,
    }
    settings = files.FilesSettings(sftp=files.SftpSettings(**options))
    key = (SSHD_STATE / "client_ed25519_key").read_text()
    return files.FilesConnector("drop", settings, SecretStore({"sftp_key": key}))


@pytest.fixture
async def sftp(sftp_root: str) -> AsyncIterator[files.FilesConnector]:
    connector = sftp_connector(sftp_root)
    yield connector
    await connector.close()


@pytest.mark.parametrize("path", ["people.csv", "people.xlsx", "people.jsonl"])
async def test_sftp_records_written_read_back_the_same(
    sftp: files.FilesConnector, sftp_root: str, path: str
):
    await call(sftp, "write", {"path": path, "records": RECORDS})

    assert await call(sftp, "read", {"path": path}) == {
        "records": RECORDS,
        "rejected": [],
    }
    assert [p.name for p in (SFTP_HOME / sftp_root).iterdir()] == [path]


async def test_sftp_json_list_move_and_delete(
    sftp: files.FilesConnector, sftp_root: str
):
    await call(sftp, "write", {"path": "a.json", "data": [1, 2]})
    await call(sftp, "write", {"path": "b.txt", "text": "b"})
    os.utime(SFTP_HOME / sftp_root / "a.json", (100, 100))
    os.utime(SFTP_HOME / sftp_root / "b.txt", (200, 200))

    listed = await call(sftp, "list", {"since_mtime": 100})
    newer = await call(sftp, "list", {"since_mtime": 150})
    data = await call(sftp, "read", {"path": "a.json"})
    await call(sftp, "move", {"path": "b.txt", "to": "c.txt"})
    await call(sftp, "delete", {"path": "a.json"})

    assert [(f["path"], f["mtime"], f["size"]) for f in listed] == [
        ("a.json", 100.0, 6),
        ("b.txt", 200.0, 1),
    ]
    assert [f["path"] for f in newer] == ["b.txt"]
    assert data == {"data": [1, 2]}
    assert [p.name for p in (SFTP_HOME / sftp_root).iterdir()] == ["c.txt"]


@pytest.mark.parametrize("path", ["../other/x.txt", "/etc/passwd", "out/x.txt"])
async def test_sftp_path_leaving_the_root_is_refused(
    sftp: files.FilesConnector, sftp_root: str, path: str
):
    # out is a symlink on the server to a folder outside the root
    (SFTP_HOME / sftp_root / "out").symlink_to("/tmp")

    with pytest.raises(errors.StepInputError):
        await call(sftp, "write", {"path": path, "format": "text", "text": "x"})


async def test_sftp_unknown_host_key_is_refused_without_retry(sftp_root: str):
    # a pinned key of another host: the server's key does not match
    other = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh5c3Qm4Zf6v+Zs7oq8lO2aQm3y3O8bV0HnV8jvJrRd"
    connector = sftp_connector(sftp_root, known_hosts=other)

    with pytest.raises(errors.ConnectorError, match="host key") as refused:
        await call(connector, "list", {})

    assert refused.value.retryable is False


def test_sftp_settings_without_a_pinned_key_are_refused():
    with pytest.raises(ValueError, match="known_hosts"):
        files.SftpSettings(host="h", username="u", password_secret="p")


async def test_sftp_closed_port_is_retryable(tmp_path: Path):
    settings = files.FilesSettings(
        sftp=files.SftpSettings(
            host="127.0.0.1",
            port=support.free_port(),
            username="u",
            password_secret="p",
            accept_unknown_host_key=True,
        ),
        timeout_seconds=5,
    )
    connector = files.FilesConnector("drop", settings, SecretStore({"p": "x"}))

    with pytest.raises(errors.TransportError) as failed:
        await call(connector, "list", {})

    assert failed.value.retryable is True


def test_folder_settings_need_exactly_one_root():
    with pytest.raises(ValueError, match="exactly one of folder and sftp"):
        files.FilesSettings()
