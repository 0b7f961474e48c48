"""Assemble a running installation: settings, store, flows, connections, engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lobflows import errors
from lobflows.connectors import base as connectors
from lobflows.engine import Engine, Worker, new_owner_id
from lobflows.engine.tasks import LINK_KEY_SECRET, TaskLinks
from lobflows.secrets import SecretStore
from lobflows.settings import Settings
from lobflows.spec import loader
from lobflows.store import RunStore


@dataclass
class Runtime:
    """Everything a server or worker process runs with."""

    settings: Settings
    store: RunStore
    secrets: SecretStore
    engine: Engine
    worker: Worker

    @classmethod
    async def open(cls, settings: Settings, flows_dir: Path) -> Runtime:
        """Load flows and connections (failing early on any problem), then migrate the store."""
        project = loader.load_project(flows_dir)
        source = str(flows_dir / loader.CONNECTIONS_FILE)
        problems = connectors.check_project(project, source=source)
        if problems:
            raise errors.FlowFileError(str(flows_dir), problems)
        secrets = SecretStore.load(settings.secrets_file)
        connections = connectors.build_connections(
            project.connections, secrets, source=source
        )
        store = await open_store(settings)
        engine = Engine(
            store=store,
            project=project,
            connections=connections,
            owner=new_owner_id(),
            lease_seconds=settings.lease_seconds,
            links=task_links(settings, secrets),
        )
        await engine.register_flows()
        worker = Worker(
            engine,
            concurrency=settings.concurrency,
            poll_interval_seconds=settings.poll_interval_seconds,
        )
        return cls(
            settings=settings,
            store=store,
            secrets=secrets,
            engine=engine,
            worker=worker,
        )

    async def close(self) -> None:
        for connection in self.engine.connections.values():
            await connection.close()
        await self.store.close()


def task_links(settings: Settings, secrets: SecretStore) -> TaskLinks:
    """Signed task links, keyed by the secret task_link_key when it is set."""
    key = secrets.get(LINK_KEY_SECRET) if LINK_KEY_SECRET in secrets.names() else None
    return TaskLinks(public_url=settings.public_url, key=key)


async def open_store(settings: Settings) -> RunStore:
    """Open the run store and bring its schema up to date."""
    store = RunStore(
        settings.database_url, step_data_budget_bytes=settings.step_data_budget_bytes
    )
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store
