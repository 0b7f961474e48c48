"""Assemble a running installation: settings, store, flows, connections, engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lobflows import errors
from lobflows.connectors import base as connectors
from lobflows.engine import Engine, Worker, new_owner_id
from lobflows.engine.tasks import LINK_KEY_SECRET, TaskLinks
from lobflows.monitor import Monitor
from lobflows.monitor import config as monitor_config
from lobflows.secrets import SecretStore, env_name
from lobflows.secrets import usage as secret_usage
from lobflows.settings import Settings
from lobflows.spec import loader, models
from lobflows.store import RunStore


@dataclass
class Runtime:
    """Everything a server or worker process runs with."""

    settings: Settings
    store: RunStore
    secrets: SecretStore
    engine: Engine
    worker: Worker
    # Health of flows and connections; its loop runs beside the worker.
    monitor: Monitor = field(init=False)

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
        monitoring = monitor_config.load(flows_dir)
        problems = monitor_config.rule_problems(
            monitoring, connections, str(flows_dir / loader.MONITOR_FILE)
        )
        if problems:
            raise errors.FlowFileError(str(flows_dir), problems)
        store = await open_store(settings)
        try:
            await secrets.attach(store, database_url=settings.database_url)
            links = task_links(settings, secrets, project)
            await store.record_secret_users(secret_usage.declared_users(project))
        except BaseException:
            await store.close()
            raise
        engine = Engine(
            store=store,
            project=project,
            connections=connections,
            owner=new_owner_id(),
            lease_seconds=settings.lease_seconds,
            links=links,
        )
        await engine.register_flows()
        worker = Worker(
            engine,
            concurrency=settings.concurrency,
            poll_interval_seconds=settings.poll_interval_seconds,
        )
        runtime = cls(
            settings=settings,
            store=store,
            secrets=secrets,
            engine=engine,
            worker=worker,
        )
        runtime.monitor = Monitor.for_runtime(runtime, monitoring)
        return runtime

    async def close(self) -> None:
        for connection in self.engine.connections.values():
            await connection.close()
        try:
            await secret_usage.flush_reads(self.secrets, self.store)
        finally:
            await self.store.close()


def task_links(
    settings: Settings, secrets: SecretStore, project: loader.Project
) -> TaskLinks:
    """Signed task links, keyed by the secret task_link_key; a flow whose task
    messages carry links cannot start without it."""
    if LINK_KEY_SECRET in secrets.names():
        return TaskLinks(
            public_url=settings.public_url, key=secrets.get(LINK_KEY_SECRET)
        )
    for flow in project.flows.values():
        for step in models.walk_steps(flow.spec.steps):
            notify = step.task.notify if isinstance(step, models.TaskStep) else None
            if notify is not None and "task.links" in str(notify.with_):
                raise errors.ConfigurationError(
                    f"flow {flow.name!r}, step {step.id!r} sends task links, which are "
                    f"signed with the secret {LINK_KEY_SECRET!r}: set "
                    f"{env_name(LINK_KEY_SECRET)} or add it to the secrets file"
                )
    return TaskLinks(public_url=settings.public_url, key=None)


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
