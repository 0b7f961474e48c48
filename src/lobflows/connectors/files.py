"""Files of records in a local folder or over SFTP: list, read, write, move, delete.

A connection names one root, either a local ``folder`` or an ``sftp`` server
and a ``root`` on it. Every path an action takes is relative to that root and
may not leave it: absolute paths and ``..`` are refused, and symbolic links
are resolved (on the server for SFTP) and checked to stay under the root.

Formats: ``csv``, ``tsv``, ``xlsx`` and ``jsonl`` are read with the bulk
readers (`lobflows.transform.bulk`), giving ``{"records": [...], "rejected":
[{row, reason}]}``; ``json`` gives ``{"data": ...}`` and ``text`` gives
``{"text": ...}``. Writes go to a hidden temporary name beside the target and
are renamed into place, so a reader never sees half a file.

SFTP host keys are never trusted silently: ``known_hosts`` pins the server's
key (lines as ``ssh-keyscan`` prints them); without it the connection is
refused unless ``accept_unknown_host_key: true`` is set explicitly.

A trigger on new files is the poll trigger over ``list``; ``since_mtime``
includes files as old as the watermark, and the id (path and mtime) keeps a
file from starting a second run, while a file changed in place starts one::

    trigger:
      poll:
        every_seconds: 30
        call: inbox.list
        with: {pattern: "*.csv", since_mtime: "{{ watermark }}"}
        items: "{{ result }}"
        id: "{{ item.path }}-{{ item.mtime }}"
        watermark: "{{ item.mtime }}"
        start: 0

``list`` skips names starting with a dot, the temporary files of writes in
progress included. Failures: an unreachable server is retryable; refused
credentials, an unknown host key, a missing file or a path outside the root
are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import io
import json
import logging
import os
import posixpath
import secrets as token
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pydantic

from lobflows import errors
from lobflows.connectors import _http, base
from lobflows.transform import bulk

log = logging.getLogger(__name__)

RECORD_FORMATS = ("csv", "tsv", "xlsx", "jsonl")
Format = Literal["csv", "tsv", "xlsx", "jsonl", "json", "text"]


class SftpSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    host: str = pydantic.Field(min_length=1, description="Server name or address.")
    port: int = pydantic.Field(default=22, ge=1, le=65535)
    username: str = pydantic.Field(min_length=1)
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the password."
    )
    key_secret: str | None = pydantic.Field(
        default=None, description="Secret holding an OpenSSH private key."
    )
    known_hosts: str | None = pydantic.Field(
        default=None,
        description="The server's host key in known_hosts form, e.g. "
        "'[sftp.example.com]:22 ssh-ed25519 AAAA...'.",
    )
    accept_unknown_host_key: bool = pydantic.Field(
        default=False,
        description="Trust whatever key the server shows; off by default.",
    )
    root: str = pydantic.Field(default=".", description="Folder on the server.")

    @pydantic.model_validator(mode="after")
    def _auth_and_host_key(self) -> SftpSettings:
        if (self.password_secret is None) == (self.key_secret is None):
            raise ValueError("set exactly one of password_secret and key_secret")
        if self.known_hosts is None and not self.accept_unknown_host_key:
            raise ValueError(
                "pin the server's key in known_hosts, or set "
                "accept_unknown_host_key: true to trust any key"
            )
        return self


class FilesSettings(base.NetworkSettings):
    folder: str | None = pydantic.Field(
        default=None, description="A local folder, the root of every path."
    )
    sftp: SftpSettings | None = pydantic.Field(
        default=None, description="An SFTP server and the root on it."
    )
    max_read_bytes: int = pydantic.Field(
        default=50 * 1024 * 1024, gt=0, description="Largest file read, in bytes."
    )

    @pydantic.model_validator(mode="after")
    def _one_root(self) -> FilesSettings:
        if (self.folder is None) == (self.sftp is None):
            raise ValueError("set exactly one of folder and sftp")
        return self


class ListParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    folder: str = "."
    pattern: str = "*"
    # Files modified at or after this time (seconds since the epoch).
    since_mtime: float | None = None


class ReadParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = pydantic.Field(min_length=1)
    format: Format | None = None
    encoding: str | None = None
    sheet: str | None = None


class WriteParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = pydantic.Field(min_length=1)
    format: Format | None = None
    records: list[dict[str, Any]] | None = None
    data: Any = None
    text: str | None = None


class MoveParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = pydantic.Field(min_length=1)
    to: str = pydantic.Field(min_length=1)


class DeleteParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = pydantic.Field(min_length=1)


def relative_parts(path: str) -> tuple[str, ...]:
    """The parts of a path relative to the root; raises if it could leave it."""
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise errors.StepInputError(f"path {path!r} must be relative to the root")
    parts = tuple(p for p in path.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise errors.StepInputError(f"path {path!r} must not contain '..'")
    return parts


def _outside(path: str) -> errors.StepInputError:
    return errors.StepInputError(f"path {path!r} leads outside the root")


class FilesConnector(base.Connector):
    """Reads and writes files of records in a local folder or over SFTP."""

    kind = "files"
    settings_model = FilesSettings
    actions = {
        "list": "Files matching a pattern, oldest first: [{path, size, mtime}].",
        "read": "A file's records (csv, tsv, xlsx, jsonl), JSON data or text.",
        "write": "Records, JSON data or text to a file, renamed into place.",
        "move": "Rename a file within the root.",
        "delete": "Remove a file.",
    }

    def __init__(self, name: str, settings: FilesSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.settings: FilesSettings = settings
        self.guard = _http.AddressGuard(settings.allow_networks)
        self._sftp: _Sftp | None = None

    async def action_list(self, params: dict[str, Any], context: Any) -> Any:
        p: ListParams = base.parse_params(ListParams, params, action="list")
        store = await self._store()
        entries = await store.list(relative_parts(p.folder))
        found = [
            e
            for e in entries
            if not posixpath.basename(e["path"]).startswith(".")
            and fnmatch.fnmatchcase(posixpath.basename(e["path"]), p.pattern)
            and (p.since_mtime is None or e["mtime"] >= p.since_mtime)
        ]
        return sorted(found, key=lambda e: (e["mtime"], e["path"]))

    async def action_read(self, params: dict[str, Any], context: Any) -> Any:
        p: ReadParams = base.parse_params(ReadParams, params, action="read")
        parts = relative_parts(p.path)
        kind = p.format or _format_of(p.path, bulk.INPUT_FORMATS)
        store = await self._store()

        with tempfile.TemporaryDirectory(prefix="lobflows-files-") as scratch:
            local = await store.fetch(
                parts, Path(scratch), self.settings.max_read_bytes
            )
            if kind in RECORD_FORMATS:
                return _records(local, kind, p.encoding, p.sheet)
            content = local.read_bytes().decode(p.encoding or "utf-8-sig")
        if kind == "json":
            return {"data": _json(p.path, content)}
        return {"text": content}

    async def action_write(self, params: dict[str, Any], context: Any) -> Any:
        p: WriteParams = base.parse_params(WriteParams, params, action="write")
        parts = relative_parts(p.path)
        kind = p.format or _format_of(p.path, (*bulk.OUTPUT_FORMATS, "xlsx"))
        content = _serialized(p, kind)
        store = await self._store()
        await store.write(parts, content)
        return {"path": "/".join(parts), "size": len(content)}

    async def action_move(self, params: dict[str, Any], context: Any) -> Any:
        p: MoveParams = base.parse_params(MoveParams, params, action="move")
        source, target = relative_parts(p.path), relative_parts(p.to)
        await (await self._store()).move(source, target)
        return {"path": "/".join(target)}

    async def action_delete(self, params: dict[str, Any], context: Any) -> Any:
        p: DeleteParams = base.parse_params(DeleteParams, params, action="delete")
        await (await self._store()).delete(relative_parts(p.path))
        return {"path": "/".join(relative_parts(p.path)), "deleted": True}

    async def check(self) -> str:
        """List the root: the local folder, or over a fresh SFTP login."""
        s = self.settings
        if s.folder is not None:
            count = await asyncio.to_thread(self._count_local_files, s.folder)
            return f"listed {s.folder}: {count} files"
        assert s.sftp is not None
        where = f"{s.sftp.host}:{s.sftp.port}"
        await self.guard.check(s.sftp.host, s.sftp.port)
        with _translated(self.name, f"check {where}"):
            async with asyncio.timeout(s.timeout_seconds):
                session = await _Sftp.open(self.name, s.sftp, self.secrets, s)
                try:
                    entries = await session.list(())
                finally:
                    await session.close()
        return (
            f"logged in to {where} as {s.sftp.username}; "
            f"listed {session.root}: {len(entries)} files"
        )

    def _count_local_files(self, folder: str) -> int:
        try:
            with os.scandir(folder) as entries:
                return sum(1 for e in entries if e.is_file())
        except OSError as exc:
            raise errors.ConnectorError(
                f"{self.name}: cannot list the folder {folder}: {exc.strerror}",
                retryable=False,
                connection=self.name,
            ) from exc

    async def close(self) -> None:
        if self._sftp is not None:
            await self._sftp.close()
            self._sftp = None

    async def _store(self) -> _Folder | _Sftp:
        s = self.settings
        if s.folder is not None:
            return _Folder(Path(s.folder))
        assert s.sftp is not None
        if self._sftp is None or self._sftp.is_closed():
            await self.guard.check(s.sftp.host, s.sftp.port)
            self._sftp = await _Sftp.open(self.name, s.sftp, self.secrets, s)
        return self._sftp


def _format_of(path: str, known: tuple[str, ...]) -> str:
    suffix = posixpath.splitext(path)[1].lower()
    kind = bulk.SUFFIXES.get(suffix) or {".json": "json", ".txt": "text"}.get(suffix)
    if kind is None or kind not in (*known, "json", "text"):
        raise errors.StepInputError(
            f"cannot tell the format of {path!r} from its suffix; set format"
        )
    return kind


def _records(local: Path, kind: str, encoding: str | None, sheet: str | None) -> Any:
    records: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    rows = bulk.read_records(local, format=kind, encoding=encoding, sheet=sheet)
    for row, record in rows:
        if isinstance(record, bulk.Unreadable):
            rejected.append({"row": row, "reason": record.reason})
        else:
            records.append(record)
    return {"records": records, "rejected": rejected}


def _json(path: str, content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise errors.StepInputError(f"{path} is not JSON: {exc}") from None


def _serialized(p: WriteParams, kind: str) -> bytes:
    if kind == "text":
        if p.text is None:
            raise errors.StepInputError("write of format text needs text")
        return p.text.encode()
    if kind == "json":
        value = p.data if p.data is not None else p.records
        return json.dumps(value, ensure_ascii=False, default=str).encode()
    if p.records is None:
        raise errors.StepInputError(f"write of format {kind} needs records")
    if kind == "xlsx":
        return _xlsx(p.records)
    buffer = io.BytesIO()
    if kind == "jsonl":
        writer: Any = bulk.JsonLinesWriter(buffer)
    else:
        delimiter = "\t" if kind == "tsv" else ","
        writer = bulk.CsvWriter(buffer, _columns(p.records), delimiter)
    for record in p.records:
        writer.write(record)
    writer.close()
    return buffer.getvalue()


def _columns(records: list[dict[str, Any]]) -> list[str]:
    # Every key of every record, in the order first seen.
    return list(dict.fromkeys(key for record in records for key in record))


def _xlsx(records: list[dict[str, Any]]) -> bytes:
    from openpyxl import Workbook  # only XLSX needs it

    columns = _columns(records)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(columns)
    for record in records:
        sheet.append([_cell(record.get(name)) for name in columns])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


# -- local folder ------------------------------------------------------------


class _Folder:
    """A local root; every path resolved and checked to stay under it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, parts: tuple[str, ...]) -> Path:
        resolved = self.root.joinpath(*parts).resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise _outside("/".join(parts))
        return resolved

    async def list(self, parts: tuple[str, ...]) -> list[dict[str, Any]]:
        folder = self._path(parts)
        entries = []
        with _os_errors(folder):
            for child in folder.iterdir():
                if not child.is_file() or not self._is_inside(child):
                    continue
                info = child.stat()
                path = "/".join((*parts, child.name))
                entries.append(
                    {"path": path, "size": info.st_size, "mtime": info.st_mtime}
                )
        return entries

    def _is_inside(self, child: Path) -> bool:
        return child.resolve().is_relative_to(self.root)

    async def fetch(self, parts: tuple[str, ...], scratch: Path, limit: int) -> Path:
        path = self._path(parts)
        with _os_errors(path):
            size = path.stat().st_size
        _check_size(path, size, limit)
        return path

    async def write(self, parts: tuple[str, ...], content: bytes) -> None:
        target = self._path(parts)
        atomic = bulk.AtomicFile(target)
        try:
            atomic.file.write(content)
        except OSError as exc:
            atomic.discard()
            raise errors.RecordFileError(
                target, f"cannot write: {exc.strerror}"
            ) from None
        atomic.commit()

    async def move(self, source: tuple[str, ...], target: tuple[str, ...]) -> None:
        old, new = self._path(source), self._path(target)
        with _os_errors(old):
            os.replace(old, new)

    async def delete(self, parts: tuple[str, ...]) -> None:
        path = self._path(parts)
        with _os_errors(path):
            path.unlink()


def _check_size(path: Any, size: int, limit: int) -> None:
    if size > limit:
        raise errors.StepInputError(
            f"{path} is {size} bytes, more than max_read_bytes ({limit})"
        )


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise errors.RecordFileError(path, "no such file or folder") from None
    except OSError as exc:
        raise errors.RecordFileError(path, f"cannot use: {exc.strerror}") from None


# -- SFTP --------------------------------------------------------------------


class _Sftp:
    """An SSH connection and its SFTP session, rooted at the settings' root."""

    def __init__(self, name: str, connection: Any, client: Any, root: str) -> None:
        self.name = name
        self.connection = connection
        self.client = client
        self.root = root

    @classmethod
    async def open(
        cls, name: str, s: SftpSettings, secrets: Any, settings: FilesSettings
    ) -> _Sftp:
        asyncssh = _asyncssh()
        if s.known_hosts is None:
            log.warning(
                "Trusting any SFTP host key, as accept_unknown_host_key says",
                extra={"event": "host_key_unchecked", "connection": name},
            )
        options: dict[str, Any] = {
            "username": s.username,
            "known_hosts": (
                asyncssh.import_known_hosts(s.known_hosts) if s.known_hosts else None
            ),
            "agent_path": None,
            "client_keys": [],
            "password": None,
        }
        if s.key_secret:
            options["client_keys"] = [
                asyncssh.import_private_key(secrets.get(s.key_secret))
            ]
        else:
            options["password"] = secrets.get(s.password_secret)
        with _translated(name, f"connect to {s.host}:{s.port}"):
            connection = await asyncio.wait_for(
                asyncssh.connect(s.host, s.port, **options), settings.timeout_seconds
            )
            try:
                client = await connection.start_sftp_client()
                root = await client.realpath(s.root)
            except BaseException:
                connection.close()
                raise
        return cls(name, connection, client, root)

    def is_closed(self) -> bool:
        return self.connection.is_closed()

    async def close(self) -> None:
        self.client.exit()
        self.connection.close()
        await self.connection.wait_closed()

    async def _path(self, parts: tuple[str, ...], *, exists: bool = True) -> str:
        full = posixpath.join(self.root, *parts)
        if exists:
            real = await self.client.realpath(full)
        else:
            folder = await self.client.realpath(posixpath.dirname(full))
            real = posixpath.join(folder, posixpath.basename(full))
        if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
            raise _outside("/".join(parts))
        return str(real)

    async def list(self, parts: tuple[str, ...]) -> list[dict[str, Any]]:
        with _translated(self.name, f"list {'/'.join(parts) or '.'}"):
            folder = await self._path(parts)
            names = await self.client.readdir(folder)
        entries = []
        for entry in names:
            attrs = entry.attrs
            if attrs.permissions is None or not stat.S_ISREG(attrs.permissions):
                continue  # symlinks and folders: reading one checks where it leads
            path = "/".join((*parts, entry.filename))
            entries.append(
                {"path": path, "size": attrs.size, "mtime": float(attrs.mtime)}
            )
        return entries

    async def fetch(self, parts: tuple[str, ...], scratch: Path, limit: int) -> Path:
        # The remote name, so that the readers see its suffix.
        local = scratch / parts[-1]
        with _translated(self.name, f"read {'/'.join(parts)}"):
            path = await self._path(parts)
            attrs = await self.client.stat(path)
            _check_size("/".join(parts), attrs.size or 0, limit)
            await self.client.get(path, str(local))
        return local

    async def write(self, parts: tuple[str, ...], content: bytes) -> None:
        with _translated(self.name, f"write {'/'.join(parts)}"):
            target = await self._path(parts, exists=False)
            folder, base_name = posixpath.split(target)
            temporary = posixpath.join(folder, f".{base_name}.{token.token_hex(4)}.tmp")
            try:
                async with self.client.open(temporary, "wb") as remote:
                    await remote.write(content)
                await self.client.posix_rename(temporary, target)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.client.remove(temporary)
                raise

    async def move(self, source: tuple[str, ...], target: tuple[str, ...]) -> None:
        with _translated(self.name, f"move {'/'.join(source)}"):
            old = await self._path(source)
            new = await self._path(target, exists=False)
            await self.client.posix_rename(old, new)

    async def delete(self, parts: tuple[str, ...]) -> None:
        with _translated(self.name, f"delete {'/'.join(parts)}"):
            await self.client.remove(await self._path(parts))


@contextlib.contextmanager
def _translated(connection: str, doing: str) -> Iterator[None]:
    try:
        yield
    except errors.LobflowsError:
        raise
    except Exception as exc:
        translated = translate(exc, connection=connection, doing=doing)
        if translated is None:
            raise
        raise translated from exc


def translate(
    exc: BaseException, *, connection: str, doing: str
) -> errors.ConnectorError | None:
    """Our error for one of asyncssh's, or None for what is not the server's."""
    asyncssh = _asyncssh()
    where = f"{connection}: {doing}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return errors.ConnectorError(
            f"{where}: the server's host key is not the one pinned in known_hosts ({exc})",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return errors.ConnectorError(
            f"{where}: the server refused the credentials",
            retryable=False,
            connection=connection,
        )
    if isinstance(exc, asyncssh.SFTPNoSuchFile):
        return errors.ConnectorError(
            f"{where}: no such file or folder", retryable=False, connection=connection
        )
    if isinstance(exc, asyncssh.SFTPError):
        return errors.ConnectorError(
            f"{where} was refused: {exc.reason}", retryable=False, connection=connection
        )
    if isinstance(
        exc,
        asyncssh.DisconnectError | asyncssh.ChannelOpenError | OSError | TimeoutError,
    ):
        return errors.TransportError(
            f"{where} failed: {type(exc).__name__} {exc}".rstrip(),
            connection=connection,
        )
    return None


def _asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise errors.ConfigurationError(
            "the files connector needs asyncssh for SFTP: pip install asyncssh"
        ) from exc
    return asyncssh
