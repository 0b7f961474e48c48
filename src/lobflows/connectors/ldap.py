"""Directory servers (OpenLDAP and other LDAP v3 servers) through ldap3.

A connection binds with a DN and the password in the secret named by
``password_secret``; people live under ``users_dn`` and groups under
``groups_dn``::

    connections:
      directory:
        type: ldap
        url: ldap://ldap.internal:389       # or ldaps://…:636
        bind_dn: cn=flows,dc=example,dc=com
        password_secret: directory-password
        base_dn: dc=example,dc=com
        users_dn: ou=people,dc=example,dc=com    # the default
        groups_dn: ou=groups,dc=example,dc=com   # the default
        start_tls: true
        timeout_seconds: 30

Users are ``inetOrgPerson`` entries named ``uid=<uid>,<users_dn>``, with
``posixAccount`` added when a ``uid_number`` is given. Groups are
``groupOfNames`` entries named ``cn=<group>,<groups_dn>`` whose ``member``
values are user DNs.

Actions:

- ``create_user`` adds a user: ``uid``, ``given_name``, ``surname``,
  ``email`` and, for a POSIX account, ``uid_number`` and ``gid_number``
  (``home_directory`` defaults to ``/home/<uid>``, ``login_shell`` is
  optional). ``password_secret`` names a secret whose value becomes the
  password, set with the Password Modify operation so the server hashes it;
  passwords are never parameters. When the entry exists with the same
  attributes the action succeeds with ``created: false, changed: false``
  (so a retried create is safe); when it differs the action fails naming
  the differing attributes, unless ``update_existing: true``, which
  replaces them. The password is set only when the entry is created or
  updated. Gives ``{dn, created, changed}``.
- ``modify_user`` replaces the attributes in ``set`` and removes those
  listed in ``remove``; values equal to the stored ones and attributes
  already absent are left alone. Gives ``{dn, changed}``.
- ``disable_user`` locks an account: ``userPassword`` becomes the marker
  ``{CRYPT}!``, which no password matches, so binds fail; a
  ``posixAccount`` also gets ``loginShell: /usr/sbin/nologin``. The old
  password hash is gone: enable a user again by setting a new password.
  Gives ``{dn, changed}``.
- ``add_to_group`` and ``remove_from_group`` add or remove the user's DN in
  the group's ``member``; a user already in (or already out of) the group
  gives ``changed: false``. The group must exist. ``groupOfNames`` needs at
  least one member, so removing the last one fails (objectClassViolation).
- ``find_users`` searches ``users_dn`` for ``inetOrgPerson`` entries whose
  ``uid``, ``mail`` and ``cn`` match the given values (all given must match;
  ``match`` is ``exact``, ``prefix`` or ``contains``). Values are escaped,
  never read as filter syntax. Gives ``{users: [{dn, attributes}],
  truncated}``; every attribute value is a list; ``userPassword`` is never
  returned.

Every action opens a connection, binds, works and unbinds in a worker
thread: ldap3's synchronous strategy is not safe to share between threads.

Errors: an unreachable server, a dropped connection, a timeout, and the
result codes busy (51), unavailable (52) and timeLimitExceeded (3) are
retryable; other result codes, such as invalidCredentials (49),
noSuchObject (32), constraintViolation (19) or objectClassViolation (65),
are permanent and carry the server's code and message. Passwords never
appear in messages.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

import ldap3
import pydantic
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from lobflows import errors, secrets
from lobflows.connectors import _http, base

T = TypeVar("T")

_DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}
# timeLimitExceeded, busy, unavailable (RFC 4511 §A.1).
_RETRYABLE_CODES = frozenset({3, 51, 52})
_ATTRIBUTE_NAME = r"^[A-Za-z][A-Za-z0-9-]*$"
_PASSWORD_ATTRIBUTES = frozenset({"userpassword"})
LOCKED_PASSWORD = "{CRYPT}!"
NOLOGIN_SHELL = "/usr/sbin/nologin"
USER_ATTRIBUTES = ("uid", "cn", "sn", "givenName", "mail")
POSIX_ATTRIBUTES = ("uidNumber", "gidNumber", "homeDirectory", "loginShell")

Values = list[str]


class LdapSettings(base.NetworkSettings):
    url: str = pydantic.Field(
        description="Server URL, 'ldap://host:389' or 'ldaps://host:636'."
    )
    bind_dn: str = pydantic.Field(
        description="DN to bind as, e.g. 'cn=flows,dc=example,dc=com'."
    )
    password_secret: str | None = pydantic.Field(
        default=None, description="Secret holding the bind password."
    )
    base_dn: str = pydantic.Field(description="Suffix, e.g. 'dc=example,dc=com'.")
    users_dn: str = pydantic.Field(
        default="", description="Where users live; default 'ou=people,<base_dn>'."
    )
    groups_dn: str = pydantic.Field(
        default="", description="Where groups live; default 'ou=groups,<base_dn>'."
    )
    start_tls: bool = pydantic.Field(
        default=False,
        description="Upgrade an ldap:// connection with StartTLS before binding.",
    )
    ca_file: str | None = pydantic.Field(
        default=None,
        description="CA certificates (PEM) for TLS; default: the system's.",
    )
    timeout_seconds: float = pydantic.Field(
        default=30.0, gt=0, description="Limit for connecting and each operation."
    )

    @pydantic.field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        server_address(value)
        return value

    @pydantic.model_validator(mode="after")
    def _defaults(self) -> LdapSettings:
        if self.start_tls and self.url.startswith("ldaps:"):
            raise ValueError("start_tls applies to ldap:// URLs, not ldaps://")
        # Frozen model: the defaults derive from base_dn once, here.
        if not self.users_dn:
            object.__setattr__(self, "users_dn", f"ou=people,{self.base_dn}")
        if not self.groups_dn:
            object.__setattr__(self, "groups_dn", f"ou=groups,{self.base_dn}")
        return self


def server_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an LDAP URL; refuse credentials and paths in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an ldap:// or ldaps:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("the URL holds credentials; use bind_dn and password_secret")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("the URL must name only scheme, host and port")
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    uid: str = pydantic.Field(min_length=1, max_length=256, description="User id.")


class CreateUserParams(_Params):
    """Parameters of ``create_user``."""

    given_name: str = pydantic.Field(min_length=1)
    surname: str = pydantic.Field(min_length=1)
    email: str = pydantic.Field(min_length=3)
    uid_number: int | None = pydantic.Field(default=None, ge=0)
    gid_number: int | None = pydantic.Field(default=None, ge=0)
    home_directory: str | None = None
    login_shell: str | None = None
    password_secret: str | None = None
    update_existing: bool = False

    @pydantic.model_validator(mode="after")
    def _posix(self) -> CreateUserParams:
        posix = (self.gid_number, self.home_directory, self.login_shell)
        if self.uid_number is None and any(v is not None for v in posix):
            raise ValueError(
                "gid_number, home_directory and login_shell need uid_number"
            )
        if self.uid_number is not None and self.gid_number is None:
            raise ValueError("uid_number needs gid_number")
        return self

    def attributes(self) -> dict[str, Values]:
        """The entry's attributes, objectClass included, as the server stores them."""
        classes = ["inetOrgPerson"]
        wanted = {
            "uid": [self.uid],
            "cn": [f"{self.given_name} {self.surname}"],
            "sn": [self.surname],
            "givenName": [self.given_name],
            "mail": [self.email],
        }
        if self.uid_number is not None:
            classes.append("posixAccount")
            wanted["uidNumber"] = [str(self.uid_number)]
            wanted["gidNumber"] = [str(self.gid_number)]
            wanted["homeDirectory"] = [self.home_directory or f"/home/{self.uid}"]
            if self.login_shell:
                wanted["loginShell"] = [self.login_shell]
        return {"objectClass": classes, **wanted}


AttributeName = Annotated[
    str, pydantic.StringConstraints(pattern=_ATTRIBUTE_NAME, max_length=64)
]
AttributeValue = str | int | list[str | int]


class ModifyUserParams(_Params):
    """Parameters of ``modify_user``."""

    set: dict[AttributeName, AttributeValue] = pydantic.Field(
        default_factory=dict, description="Attributes to replace, by name."
    )
    remove: list[AttributeName] = pydantic.Field(
        default_factory=list, description="Attributes to delete."
    )

    @pydantic.model_validator(mode="after")
    def _no_passwords(self) -> ModifyUserParams:
        named = [*self.set, *self.remove]
        if any(name.lower() in _PASSWORD_ATTRIBUTES for name in named):
            raise ValueError("userPassword cannot be set here; passwords are secrets")
        if not named:
            raise ValueError("give attributes in set or remove")
        both = sorted({n.lower() for n in self.set} & {n.lower() for n in self.remove})
        if both:
            raise ValueError(f"{', '.join(both)} is both in set and in remove")
        return self


class GroupParams(_Params):
    """Parameters of ``add_to_group`` and ``remove_from_group``."""

    group: str = pydantic.Field(min_length=1, description="The group's cn.")


class FindUsersParams(pydantic.BaseModel):
    """Parameters of ``find_users``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    uid: str | None = None
    mail: str | None = None
    cn: str | None = None
    match: Literal["exact", "prefix", "contains"] = "exact"
    attributes: list[AttributeName] = pydantic.Field(
        default_factory=lambda: [*USER_ATTRIBUTES, *POSIX_ATTRIBUTES]
    )
    size_limit: int = pydantic.Field(default=100, ge=1, le=10_000)

    @pydantic.field_validator("attributes")
    @classmethod
    def _no_passwords(cls, value: list[str]) -> list[str]:
        if any(name.lower() in _PASSWORD_ATTRIBUTES for name in value):
            raise ValueError("userPassword is never returned")
        return value

    def search_filter(self) -> str:
        """An LDAP filter with every value escaped (RFC 4515)."""
        terms = ["(objectClass=inetOrgPerson)"]
        for name in ("uid", "mail", "cn"):
            value = getattr(self, name)
            if value is not None:
                terms.append(f"({name}={_pattern(value, self.match)})")
        return f"(&{''.join(terms)})"


def _pattern(value: str, match: str) -> str:
    escaped = escape_filter_chars(value)
    if match == "prefix":
        return f"{escaped}*"
    if match == "contains":
        return f"*{escaped}*"
    return escaped


class LdapConnector(base.Connector):
    """Creates, changes, disables, groups and finds users in an LDAP directory."""

    kind = "ldap"
    settings_model = LdapSettings
    actions = {
        "create_user": "Add a user; an equal existing user is success unchanged.",
        "modify_user": "Replace and remove attributes of a user.",
        "disable_user": "Lock a user's password and shell.",
        "add_to_group": "Add a user to a group; a member already is unchanged.",
        "remove_from_group": "Remove a user from a group; a non-member is unchanged.",
        "find_users": "Search users by uid, mail or cn.",
    }

    def __init__(self, name: str, settings: LdapSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self.scheme, self.host, self.port = server_address(settings.url)
        self.guard = _http.AddressGuard(settings.allow_networks)

    def user_dn(self, uid: str) -> str:
        return f"uid={escape_rdn(uid)},{self.settings.users_dn}"

    def group_dn(self, group: str) -> str:
        return f"cn={escape_rdn(group)},{self.settings.groups_dn}"

    async def action_create_user(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CreateUserParams = base.parse_params(
            CreateUserParams, params, action=f"{self.name}.create_user"
        )
        dn = self.user_dn(p.uid)
        wanted = p.attributes()
        password = self.secrets.get(p.password_secret) if p.password_secret else None

        def work(connection: ldap3.Connection) -> dict[str, Any]:
            try:
                connection.add(dn, attributes=wanted)
            except ldap_errors.LDAPEntryAlreadyExistsResult:
                # A retried create, or someone else's: equal is success.
                return self._reconcile(connection, dn, wanted, p, password)
            if password is not None:
                connection.extend.standard.modify_password(dn, new_password=password)
            return {"dn": dn, "created": True, "changed": True}

        return await self._run(work, context, what=f"create_user {p.uid}")

    def _reconcile(
        self,
        connection: ldap3.Connection,
        dn: str,
        wanted: dict[str, Values],
        p: CreateUserParams,
        password: str | None,
    ) -> dict[str, Any]:
        found = _read(connection, dn, list(wanted))
        differing = _differences(wanted, found)
        if not differing:
            return {"dn": dn, "created": False, "changed": False}
        if not p.update_existing:
            shown = "; ".join(
                f"{name}: expected {wanted[name]}, found {found.get(name, [])}"
                for name in differing
            )
            raise errors.ConnectorError(
                f"{self.name}: user {dn} exists with other attributes ({shown}); "
                "set update_existing: true to replace them",
                retryable=False,
                connection=self.name,
                differing=differing,
            )
        changes = {name: _replacement(name, wanted, found) for name in differing}
        connection.modify(dn, changes)
        if password is not None:
            connection.extend.standard.modify_password(dn, new_password=password)
        return {"dn": dn, "created": False, "changed": True}

    async def action_modify_user(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: ModifyUserParams = base.parse_params(
            ModifyUserParams, params, action=f"{self.name}.modify_user"
        )
        dn = self.user_dn(p.uid)
        wanted = {name: _values(value) for name, value in p.set.items()}

        def work(connection: ldap3.Connection) -> dict[str, Any]:
            found = _read(connection, dn, [*wanted, *p.remove])
            changes: dict[str, Any] = {
                name: [(ldap3.MODIFY_REPLACE, wanted[name])]
                for name in _differences(wanted, found)
            }
            for name in p.remove:
                if found.get(name):
                    changes[name] = [(ldap3.MODIFY_DELETE, [])]
            if changes:
                connection.modify(dn, changes)
            return {"dn": dn, "changed": bool(changes)}

        return await self._run(work, context, what=f"modify_user {p.uid}")

    async def action_disable_user(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: _Params = base.parse_params(
            _Params, params, action=f"{self.name}.disable_user"
        )
        dn = self.user_dn(p.uid)

        def work(connection: ldap3.Connection) -> dict[str, Any]:
            found = _read(connection, dn, ["objectClass", "userPassword", "loginShell"])
            wanted = {"userPassword": [LOCKED_PASSWORD]}
            classes = {c.lower() for c in found.get("objectClass", [])}
            if "posixaccount" in classes:
                wanted["loginShell"] = [NOLOGIN_SHELL]
            changes = {
                name: [(ldap3.MODIFY_REPLACE, wanted[name])]
                for name in _differences(wanted, found)
            }
            if changes:
                connection.modify(dn, changes)
            return {"dn": dn, "changed": bool(changes)}

        return await self._run(work, context, what=f"disable_user {p.uid}")

    async def action_add_to_group(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        return await self._membership(params, context, action="add_to_group")

    async def action_remove_from_group(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        return await self._membership(params, context, action="remove_from_group")

    async def _membership(
        self, params: dict[str, Any], context: base.CallContext, *, action: str
    ) -> Any:
        p: GroupParams = base.parse_params(
            GroupParams, params, action=f"{self.name}.{action}"
        )
        user, group = self.user_dn(p.uid), self.group_dn(p.group)
        adding = action == "add_to_group"

        def work(connection: ldap3.Connection) -> dict[str, Any]:
            if adding:
                # OpenLDAP keeps no referential integrity by default:
                # refuse to add a member that does not exist.
                _read(connection, user, ["uid"])
            operation = ldap3.MODIFY_ADD if adding else ldap3.MODIFY_DELETE
            try:
                connection.modify(group, {"member": [(operation, [user])]})
            except (
                ldap_errors.LDAPAttributeOrValueExistsResult,
                ldap_errors.LDAPNoSuchAttributeResult,
            ):
                # Already a member (20), or already not one (16).
                return {"dn": user, "group": group, "changed": False}
            return {"dn": user, "group": group, "changed": True}

        return await self._run(work, context, what=f"{action} {p.uid} {p.group}")

    async def action_find_users(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: FindUsersParams = base.parse_params(
            FindUsersParams, params, action=f"{self.name}.find_users"
        )

        def work(connection: ldap3.Connection) -> dict[str, Any]:
            connection.search(
                self.settings.users_dn,
                p.search_filter(),
                search_scope=ldap3.SUBTREE,
                attributes=p.attributes,
                size_limit=p.size_limit,
            )
            users = [
                {"dn": entry["dn"], "attributes": _as_values(entry["attributes"])}
                for entry in connection.response or []
                if entry.get("type") == "searchResEntry"
            ]
            # sizeLimitExceeded (4) is not raised: the entries so far came back.
            truncated = connection.result.get("result") == 4
            return {"users": users, "truncated": truncated}

        return await self._run(work, context, what="find_users")

    async def check(self) -> str:
        """Bind with the connection's credentials."""
        context = base.CallContext(
            run_id="check",
            flow="check",
            step="check",
            attempt=1,
            timeout_seconds=self.settings.timeout_seconds,
        )
        await self._run(lambda c: None, context, what="check")
        return f"bound to {self.settings.url} as {self.settings.bind_dn}"

    async def _run(
        self,
        work: Callable[[ldap3.Connection], T],
        context: base.CallContext,
        *,
        what: str,
    ) -> T:
        """Run `work` on a bound connection in a worker thread, translating errors."""
        await self.guard.check(self.host, self.port)
        timeout = min(self.settings.timeout_seconds, context.timeout_seconds)
        password = self._password()

        def session() -> T:
            with self._translated(what):
                connection = self._connect(timeout, password)
                try:
                    return work(connection)
                finally:
                    connection.unbind()

        return await asyncio.to_thread(session)

    def _password(self) -> str | None:
        name = self.settings.password_secret
        return self.secrets.get(name) if name else None

    def _connect(self, timeout: float, password: str | None) -> ldap3.Connection:
        s: LdapSettings = self.settings
        tls = None
        if self.scheme == "ldaps" or s.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=s.ca_file)
        server = ldap3.Server(
            self.host,
            port=self.port,
            use_ssl=self.scheme == "ldaps",
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=timeout,
        )
        connection = ldap3.Connection(
            server,
            user=s.bind_dn,
            password=password,
            raise_exceptions=True,
            # ldap3 packs this into SO_RCVTIMEO, which takes whole seconds.
            receive_timeout=math.ceil(timeout),
        )
        connection.open()
        if s.start_tls:
            connection.start_tls()
        connection.bind()
        return connection

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except ldap_errors.LDAPException as exc:
            raise self.error(exc, what) from exc
        except OSError as exc:
            # Socket trouble ldap3 lets through unwrapped.
            message = f"{self.name}: {what} on {self.settings.url} failed: {exc}"
            raise errors.TransportError(
                secrets.redactor.redact(message), connection=self.name
            ) from exc

    def error(self, exc: ldap_errors.LDAPException, what: str) -> errors.ConnectorError:
        """Our error for one of ldap3's, with the server's code and message."""
        where = f"{self.name}: {what} on {self.settings.url} failed"
        if isinstance(exc, ldap_errors.LDAPOperationResult):
            detail = f"{exc.description} ({exc.result})"
            if exc.message:
                detail += f": {exc.message}"
            message = secrets.redactor.redact(f"{where}: {detail}")
            return errors.ConnectorError(
                message,
                retryable=exc.result in _RETRYABLE_CODES,
                connection=self.name,
                code=exc.result,
            )
        message = secrets.redactor.redact(f"{where}: {type(exc).__name__}: {exc}")
        if _is_transport_failure(exc):
            return errors.TransportError(message, connection=self.name)
        return errors.ConnectorError(message, retryable=False, connection=self.name)


def _is_transport_failure(exc: ldap_errors.LDAPException) -> bool:
    """Could the server not be reached, or did it stop answering?"""
    return isinstance(
        exc,
        ldap_errors.LDAPCommunicationError
        | ldap_errors.LDAPResponseTimeoutError
        | ldap_errors.LDAPMaximumRetriesError
        | ldap_errors.LDAPServerPoolExhaustedError,
    )


def _read(connection: ldap3.Connection, dn: str, names: list[str]) -> dict[str, Values]:
    """The named attributes of one entry; noSuchObject when it is missing."""
    connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=names)
    entries = [
        e for e in connection.response or [] if e.get("type") == "searchResEntry"
    ]
    return _as_values(entries[0]["attributes"]) if entries else {}


def _as_values(attributes: Any) -> dict[str, Values]:
    """Attribute values as lists of text, keyed by the names we use."""
    found: dict[str, Values] = {}
    for name, value in attributes.items():
        values = value if isinstance(value, list) else [value]
        found[name] = [_text(v) for v in values]
    return _CaseInsensitive(found)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class _CaseInsensitive(dict[str, Values]):
    """LDAP attribute names ignore case: `mail` finds `Mail`."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        for key, value in self.items():
            if key.lower() == name.lower():
                return value
        return default


def _values(value: AttributeValue) -> Values:
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values]


def _differences(wanted: dict[str, Values], found: dict[str, Values]) -> list[str]:
    """Names whose stored values differ from the wanted ones.

    objectClass differs only when a wanted class is missing: the server may
    hold more (``top``, auxiliaries added by others).
    """
    differing = []
    for name, values in wanted.items():
        stored = found.get(name, [])
        if name.lower() == "objectclass":
            if {v.lower() for v in values} - {v.lower() for v in stored}:
                differing.append(name)
        elif sorted(values) != sorted(stored):
            differing.append(name)
    return differing


def _replacement(
    name: str, wanted: dict[str, Values], found: dict[str, Values]
) -> list[tuple[Any, Values]]:
    if name.lower() == "objectclass":
        stored = {v.lower() for v in found.get(name, [])}
        missing = [c for c in wanted[name] if c.lower() not in stored]
        return [(ldap3.MODIFY_ADD, missing)]
    return [(ldap3.MODIFY_REPLACE, wanted[name])]
