"""``lobflows secrets``: Secrets in the encrypted vault: set, list, rotate, show where they are used.

Values are read from standard input or a hidden prompt, never from the
command line (where the shell history and the process list would keep
them), and never printed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lobflows import errors
from lobflows.cli import common as cli
from lobflows.cli import views
from lobflows.secrets import SecretStore, env_name
from lobflows.secrets import inventory as secret_inventory
from lobflows.secrets import usage as secret_usage
from lobflows.secrets import vault as secret_vault

secrets_app = typer.Typer(
    help="Secrets in the encrypted vault: set, list, rotate, show where they are used.",
    no_args_is_help=True,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DEFAULT_GRACE = "1h"
MAX_ROTATE_EVERY_DAYS = 3650  # ten years
MAX_GRACE_SECONDS = 30 * 86_400

SecretName = Annotated[
    str, typer.Argument(help="Secret name, as flows and connections write it.")
]
FlowsOption = Annotated[
    Path | None,
    typer.Option(
        "--flows",
        envvar="LOBFLOWS_FLOWS",
        help="Folder of flows and connections.yaml, to see what uses each "
        "secret; without it, what the last server or worker to start recorded.",
    ),
]
RotateEvery = Annotated[
    str | None,
    typer.Option(
        "--rotate-every",
        help="Rotation policy, as 90d or 12w: the secret is overdue this long "
        "after its last rotation.",
    ),
]


def parse_duration(text: str, *, option: str) -> float:
    """Seconds in a duration such as 30s, 15m, 1h, 90d or 2w (0 is allowed)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None or (not match[2] and float(match[1]) != 0):
        cli.fail(
            f"{option} {text!r} is not a duration: expected a number with a unit "
            "s, m, h, d or w (as 1h or 90d)",
            cli.EXIT_USAGE,
        )
        raise AssertionError("unreachable")
    return float(match[1]) * UNIT_SECONDS[match[2] or "s"]


def _policy_days(text: str | None) -> int | None:
    if text is None:
        return None
    seconds = parse_duration(text, option="--rotate-every")
    days = seconds / secret_inventory.SECONDS_PER_DAY
    if days > MAX_ROTATE_EVERY_DAYS:
        cli.fail(
            f"--rotate-every {text!r} is too long: expected at most "
            f"{MAX_ROTATE_EVERY_DAYS}d (ten years)",
            cli.EXIT_USAGE,
        )
    if days < 1 or days != int(days):
        cli.fail(
            f"--rotate-every {text!r} must be a whole number of days, at least 1 "
            "(as 90d or 12w)",
            cli.EXIT_USAGE,
        )
    return int(days)


def _grace_seconds(text: str) -> float:
    seconds = parse_duration(text, option="--grace")
    if seconds > MAX_GRACE_SECONDS:
        cli.fail(
            f"--grace {text!r} is too long: expected at most 30d",
            cli.EXIT_USAGE,
        )
    return seconds


def _checked_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        cli.fail(
            f"secret name {name!r} is not valid: expected letters, digits, '_', "
            "'-' and '.', starting with a letter or digit (200 at most)",
            cli.EXIT_USAGE,
        )
    return name


def _read_value(name: str, *, confirm: bool) -> str:
    """The value from standard input, or a hidden prompt on a terminal."""
    if sys.stdin.isatty():
        value = typer.prompt(
            f"Value of {name}", hide_input=True, confirmation_prompt=confirm
        )
    else:
        value = sys.stdin.read()
        # `echo value | lobflows secrets set x` adds a newline that is not
        # part of the value.
        value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        cli.fail(
            f"no value for secret {name!r}: pipe it on standard input or type "
            "it at the prompt",
            cli.EXIT_USAGE,
        )
    try:
        secret_vault.check_value(name, str(value))
    except errors.ConfigurationError as exc:
        cli.fail(str(exc), cli.EXIT_USAGE)
    return str(value)


def _check_master_key() -> None:
    """Fail on a missing or unusable key before asking for the value."""
    cli.run_async(_key_ready())


async def _key_ready() -> None:
    cipher = secret_vault.master_key(cli.options.settings.database_url)
    secret_vault.Vault(None, cipher).encrypt("")


async def _open_vault(store: Any) -> secret_vault.Vault:
    """The vault with the master key, checked against what it holds."""
    cipher = secret_vault.master_key(cli.options.settings.database_url)
    vault = secret_vault.Vault(store, cipher)
    await vault.refresh()
    vault.encrypt("")  # fails with a clear message when no key is set
    return vault


def _warn_if_shadowed(name: str) -> None:
    if env_name(name) in os.environ:
        cli.err_console.print(
            f"[yellow]note:[/] {env_name(name)} is set in this environment; "
            "where it is set, it wins over the vault.",
            highlight=False,
        )


@secrets_app.command("new-key")
def new_key() -> None:
    """Print a fresh master key (on stdout; the advice goes to stderr)."""
    typer.echo(secret_vault.new_key())
    cli.err_console.print(
        "Keep this key out of the run store's folder and out of version control: "
        f"put it in {secret_vault.MASTER_KEY_ENV} or in a file only the service "
        f"user can read, named by {secret_vault.MASTER_KEY_FILE_ENV}. Store a "
        "copy in your password manager: without it the vault cannot be read.",
        highlight=False,
    )


@secrets_app.command("set")
def secrets_set(name: SecretName, rotate_every: RotateEvery = None) -> None:
    """Add a secret to the vault; the value comes from stdin or a hidden prompt."""
    name = _checked_name(name)
    policy = _policy_days(rotate_every)
    _check_master_key()
    value = _read_value(name, confirm=True)

    async def add(store: Any) -> None:
        vault = await _open_vault(store)
        await store.add_secret(name, vault.encrypt(value), rotate_every_days=policy)
        detail = {"version": 1, "rotate_every_days": policy}
        await store.record_audit(cli.cli_actor(), "secret_set", name, detail)

    cli.run_async(cli.with_store(add, create=True))  # before the first serve, too
    cli.console.print(
        f"Secret {name} stored in the vault (version 1).", highlight=False
    )
    _warn_if_shadowed(name)


@secrets_app.command("rotate")
def secrets_rotate(
    name: SecretName,
    grace: Annotated[
        str,
        typer.Option(
            help="How long runs started before the rotation keep the old value, "
            "and incoming signatures made with it are accepted (as 30m, 1h, 2d)."
        ),
    ] = DEFAULT_GRACE,
    rotate_every: RotateEvery = None,
) -> None:
    """Give a secret a new value (from stdin or a hidden prompt); the old one is kept."""
    name = _checked_name(name)
    grace_seconds = _grace_seconds(grace)
    policy = _policy_days(rotate_every)
    _check_master_key()
    value = _read_value(name, confirm=True)

    async def rotate(store: Any) -> int:
        vault = await _open_vault(store)
        version = await store.rotate_secret(
            name,
            vault.encrypt(value),
            grace_seconds=grace_seconds,
            rotate_every_days=policy,
        )
        detail = {"version": version, "grace_seconds": grace_seconds}
        await store.record_audit(cli.cli_actor(), "secret_rotate", name, detail)
        return version

    version = cli.run_async(cli.with_store(rotate))
    cli.console.print(
        f"Secret {name} rotated to version {version}; runs started before keep "
        f"version {version - 1} for {grace}.",
        highlight=False,
    )
    _warn_if_shadowed(name)


@secrets_app.command("rekey")
def secrets_rekey(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            envvar=secret_vault.NEW_MASTER_KEY_FILE_ENV,
            help=f"File holding the new master key; or give the key itself in "
            f"{secret_vault.NEW_MASTER_KEY_ENV}.",
        ),
    ] = None,
) -> None:
    """Re-encrypt every version of every secret under a new master key."""
    database_url = cli.options.settings.database_url

    async def rekey(store: Any) -> dict[str, list[int]]:
        new = secret_vault.new_master_key(database_url, new_key_file)
        current = secret_vault.master_key(database_url)
        done = await secret_vault.rekey(store, current=current, new=new)
        if done:
            detail = {"versions": done}
            await store.record_audit(cli.cli_actor(), "secret_rekey", "vault", detail)
        return done

    done = cli.run_async(cli.with_store(rekey))
    _print_rekeyed(done)


def _print_rekeyed(done: dict[str, list[int]]) -> None:
    key_settings = (
        f"{secret_vault.MASTER_KEY_ENV} or {secret_vault.MASTER_KEY_FILE_ENV}"
    )
    if not done:
        cli.console.print(
            f"The vault holds no secrets: nothing to re-encrypt. Set the new key "
            f"in {key_settings} for every process.",
            highlight=False,
        )
        return
    versions = sum(len(v) for v in done.values())
    cli.console.print(
        f"Re-encrypted {versions} version(s) of {len(done)} secret(s) under the "
        "new master key:",
        highlight=False,
    )
    for name, numbers in done.items():
        listed = ", ".join(str(n) for n in numbers)
        label = "versions" if len(numbers) > 1 else "version"
        cli.console.print(f"  {escape(name)}: {label} {listed}", highlight=False)
    cli.console.print(
        f"Next: set the new key in {key_settings} for every process that reads "
        "the vault (serve, worker, run and the secrets commands). A running "
        "serve or worker reads a replaced key file again within seconds; one "
        "given the key in its environment needs a restart. Until then it keeps "
        "the values it has loaded but cannot read a secret set or rotated from "
        "now on. Backups of the run store made before now still need the old "
        "key.",
        highlight=False,
    )


@secrets_app.command("list")
def secrets_list(flows: FlowsOption = None) -> None:
    """Every secret: backend, version, dates, policy, who uses it. Never values."""
    infos = cli.run_async(cli.with_store(lambda store: _inventory(store, flows)))
    cli.console.print(inventory_table(infos))


@secrets_app.command("show-usage")
def secrets_show_usage(name: SecretName, flows: FlowsOption = None) -> None:
    """Which connections and flows use a secret, and when it was last used."""
    infos = cli.run_async(cli.with_store(lambda store: _inventory(store, flows)))
    info = next((i for i in infos if i.name == name), None)
    if info is None:
        cli.fail(
            f"no secret named {name!r} is defined or used",
            cli.EXIT_NOT_FOUND,
            "`lobflows secrets list` shows every secret",
        )
        return
    users = ", ".join(info.used_by) or "nothing declared"
    cli.console.print(f"{info.name} ({info.backend})", highlight=False)
    cli.console.print(f"  used by:   {users}", highlight=False)
    cli.console.print(f"  last used: {views.when(info.last_used_at)}", highlight=False)


@secrets_app.command("remove")
def secrets_remove(
    name: SecretName,
    force: Annotated[
        bool, typer.Option("--force", help="Remove it even though something uses it.")
    ] = False,
    flows: FlowsOption = None,
) -> None:
    """Delete a secret and all its versions from the vault."""

    async def remove(store: Any) -> list[str]:
        infos = await _inventory(store, flows)
        users = next((i.used_by for i in infos if i.name == name), [])
        if users and not force:
            return users
        await store.remove_secret(name)
        await store.record_audit(
            cli.cli_actor(), "secret_remove", name, {"used_by": users, "forced": force}
        )
        return []

    users = cli.run_async(cli.with_store(remove))
    if users:
        cli.fail(
            f"secret {name!r} is used by {', '.join(users)}; not removed",
            cli.EXIT_PROBLEMS,
            "change those first, or pass --force",
        )
    cli.console.print(f"Secret {name} removed from the vault.", highlight=False)


async def _inventory(
    store: Any, flows: Path | None
) -> list[secret_inventory.SecretInfo]:
    secrets = SecretStore.load(cli.options.settings.secrets_file)
    used_by = None
    if flows is not None:
        from lobflows.spec import loader

        used_by = secret_usage.declared_users(loader.load_project(flows))
    return await secret_inventory.build_inventory(store, secrets, used_by=used_by)


def inventory_table(infos: list[secret_inventory.SecretInfo]) -> Table:
    overdue = sum(1 for i in infos if i.overdue)
    title = f"{len(infos)} secret(s)" + (f", {overdue} overdue" if overdue else "")
    table = Table(title=title, title_justify="left")
    for column in ("name", "backend", "version", "created", "last rotated"):
        table.add_column(column)
    for column in ("last used", "policy", "overdue", "used by"):
        table.add_column(column)
    for i in infos:
        table.add_row(
            escape(i.name),
            i.backend if i.backend != "missing" else "[red]missing[/]",
            str(i.version) if i.version is not None else "-",
            views.when(i.created_at),
            views.when(i.rotated_at),
            views.when(i.last_used_at),
            f"{i.rotate_every_days}d" if i.rotate_every_days else "-",
            "[red]overdue[/]" if i.overdue else "-",
            escape(", ".join(i.used_by)) or "-",
        )
    return table
