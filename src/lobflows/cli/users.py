"""``lobflows users``: Dashboard and API users, their roles and API tokens.

Passwords are never taken from the command line, where other users of the
machine could read them: they come from a hidden prompt, or from standard
input with --password-stdin. Every change is written to the audit log.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from lobflows import errors
from lobflows.cli import common as cli
from lobflows.cli import views

T = TypeVar("T")

users_app = typer.Typer(
    help="Dashboard and API users, their roles and API tokens.", no_args_is_help=True
)
token_app = typer.Typer(
    help="API tokens: bearer tokens for the REST API, acting as their user.",
    no_args_is_help=True,
)
users_app.add_typer(token_app, name="token")


class Role(enum.StrEnum):
    viewer = "viewer"
    approver = "approver"
    operator = "operator"
    admin = "admin"


UserName = Annotated[str, typer.Argument(help="The user's name, used to sign in.")]
Roles = Annotated[
    list[Role],
    typer.Option(
        "--role",
        "-r",
        help="viewer, approver, operator or admin; repeat for several.",
        case_sensitive=False,
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input.",
    ),
]


def _with_store(
    action: Callable[[Any], Awaitable[T]],
    *,
    create: bool = False,
    listed_by: str = "lobflows users list",
) -> T:
    """Run `action` on the run store, a missing user or token becoming a
    not-found error that says which command lists them."""

    async def guarded(store: Any) -> T:
        try:
            return await action(store)
        except errors.UserNotFoundError as exc:
            cli.fail(str(exc), cli.EXIT_NOT_FOUND, f"{listed_by} shows them")
        raise AssertionError("unreachable")

    return cli.run_async(cli.with_store(guarded, create=create))


def _read_password(from_stdin: bool) -> str:
    from lobflows.web import credentials

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        credentials.check_password(password)
    except ValueError as exc:
        cli.fail(str(exc), cli.EXIT_USAGE)
    return password


def _hashed(password: str) -> str:
    from lobflows.web import credentials

    return credentials.hash_password(password)


@users_app.command("add")
def users_add(
    name: UserName,
    roles: Roles,
    email: Annotated[
        str | None,
        typer.Option(help="E-mail address: tasks and single sign-on know them by it."),
    ] = None,
    password_stdin: PasswordStdin = False,
    no_password: Annotated[
        bool,
        typer.Option(
            "--no-password", help="Sign in through single sign-on only; no password."
        ),
    ] = False,
) -> None:
    """Add a user with one or more roles; asks for the password."""
    from lobflows.web import credentials

    try:
        name = credentials.check_user_name(name)
        if email is not None:
            email = credentials.check_email(email)
    except ValueError as exc:
        cli.fail(str(exc), cli.EXIT_USAGE)
    password_hash = None if no_password else _hashed(_read_password(password_stdin))
    chosen = sorted({r.value for r in roles})

    async def add(store: Any) -> None:
        await store.add_user(
            name, roles=chosen, email=email, password_hash=password_hash
        )
        await store.record_audit(
            cli.cli_actor(),
            "user_add",
            f"user {name}",
            {"roles": chosen, "email": email},
        )

    # The first admin may be added before the server has ever run.
    _with_store(add, create=True)
    cli.console.print(
        f"User {name} added with role(s) {', '.join(chosen)}.", highlight=False
    )


@users_app.command("list")
def users_list() -> None:
    """Every user with their roles and live API tokens."""

    async def load(store: Any) -> Any:
        return await store.users(), await store.api_tokens()

    users, tokens = _with_store(load)
    live: dict[str, int] = {}
    for token in tokens:
        if token.is_active:
            live[token.user] = live.get(token.user, 0) + 1
    table = Table(title=f"{len(users)} user(s)", title_justify="left")
    for column in ("name", "e-mail", "roles", "password", "tokens", "added (UTC)"):
        table.add_column(column, overflow="fold")
    for user in users:
        table.add_row(
            escape(user.name),
            escape(user.email or "-"),
            ", ".join(user.roles),
            "set" if user.password_hash else "-",
            str(live.get(user.name, 0)),
            views.when(user.created_at),
        )
    cli.console.print(table)


@users_app.command("remove")
def users_remove(name: UserName) -> None:
    """Remove a user; their API tokens and sessions stop working at once."""

    async def remove(store: Any) -> None:
        await store.remove_user(name)
        await store.record_audit(cli.cli_actor(), "user_remove", f"user {name}")

    _with_store(remove)
    cli.console.print(f"User {name} removed.", highlight=False)


@users_app.command("set-password")
def users_set_password(name: UserName, password_stdin: PasswordStdin = False) -> None:
    """Give a user a new password; their open sessions end."""
    password_hash = _hashed(_read_password(password_stdin))

    async def change(store: Any) -> None:
        await store.set_password_hash(name, password_hash)
        await store.record_audit(cli.cli_actor(), "user_password", f"user {name}")

    _with_store(change)
    cli.console.print(f"Password of {name} changed.", highlight=False)


@users_app.command("roles")
def users_roles(name: UserName, roles: Roles) -> None:
    """Replace a user's roles with the ones given."""
    chosen = sorted({r.value for r in roles})

    async def change(store: Any) -> Any:
        before = await store.find_user(name)
        user = await store.set_roles(name, chosen)
        await store.record_audit(
            cli.cli_actor(),
            "user_roles",
            f"user {name}",
            {"before": list(before.roles), "after": chosen},
        )
        return user

    user = _with_store(change)
    cli.console.print(
        f"{user.name} now has role(s) {', '.join(user.roles)}.", highlight=False
    )


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose token it is.")],
    label: Annotated[
        str, typer.Option("--name", "-n", help="A label, e.g. where the token is used.")
    ],
) -> None:
    """Make an API token and print it once; only its SHA-256 is stored."""
    from lobflows.web import credentials

    token = credentials.new_api_token()
    digest = credentials.token_digest(token)

    async def create(store: Any) -> None:
        await store.add_api_token(user, name=label, token_hash=digest)
        await store.record_audit(
            cli.cli_actor(), "token_create", f"user {user}", {"token": label}
        )

    _with_store(create)
    # The token alone on stdout, so it can be piped into a secret store.
    sys.stdout.write(token + "\n")
    cli.err_console.print(
        f"API token {label!r} of {user} created; it is shown only this once.",
        highlight=False,
    )


@token_app.command("list")
def token_list(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only this user's tokens.")
    ] = None,
) -> None:
    """API tokens with their labels and when they were last used; never the tokens."""
    tokens = _with_store(lambda store: store.api_tokens(user))
    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    for column in ("user", "name", "created (UTC)", "last used (UTC)", "status"):
        table.add_column(column, overflow="fold")
    for token in tokens:
        table.add_row(
            escape(token.user),
            escape(token.name),
            views.when(token.created_at),
            views.when(token.last_used_at),
            "live" if token.is_active else f"revoked {views.when(token.revoked_at)}",
        )
    cli.console.print(table)


@token_app.command("revoke")
def token_revoke(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose token it is.")],
    label: Annotated[str, typer.Option("--name", "-n", help="The token's label.")],
) -> None:
    """Revoke an API token; requests with it are refused from now on."""

    async def revoke(store: Any) -> None:
        await store.revoke_api_token(user, label)
        await store.record_audit(
            cli.cli_actor(), "token_revoke", f"user {user}", {"token": label}
        )

    _with_store(revoke, listed_by="lobflows users token list")
    cli.console.print(f"API token {label!r} of {user} revoked.", highlight=False)
