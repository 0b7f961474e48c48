"""The ldap connector against a real OpenLDAP slapd on loopback (scripts/slapd.sh)."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.core import exceptions as ldap_errors

from lobflows import errors
from lobflows.connectors import base, ldap
from lobflows.secrets import SecretStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
HOST, PORT = "127.0.0.1", 3890
URL = f"ldap://{HOST}:{PORT}"
SUFFIX = "dc=example,dc=com"
ADMIN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = os.environ.get("LOBFLOWS_LDAP_ADMIN_PASSWORD", "lobflows-test-admin")
USER_PASSWORD = "Ada-pw-7f3k2"
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="people", step="s", attempt=1, timeout_seconds=10
)


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


@pytest.fixture(scope="session")
def slapd() -> None:
    """The test directory; started by scripts/slapd.sh when it is not running."""
    if not is_listening(PORT):
        subprocess.run(["bash", str(REPO / "scripts" / "slapd.sh")], check=True)


@pytest.fixture
def admin(slapd: None) -> Iterator[ldap3.Connection]:
    """A plain ldap3 connection bound as the directory's admin, to check results."""
    connection = ldap3.Connection(
        ldap3.Server(HOST, port=PORT, get_info=ldap3.NONE),
        user=ADMIN,
        password=ADMIN_PASSWORD,
        auto_bind=True,
        raise_exceptions=True,
    )
    yield connection
    connection.unbind()


def connector(**settings: Any) -> ldap.LdapConnector:
    values = {
        "url": URL,
        "bind_dn": ADMIN,
        "password_secret": "directory",
        "base_dn": SUFFIX,
        "timeout_seconds": 5,
        **settings,
    }
    store = SecretStore({"directory": ADMIN_PASSWORD, "ada-password": USER_PASSWORD})
    validated = ldap.LdapSettings.model_validate(values)
    return ldap.LdapConnector("directory", validated, store)


@pytest.fixture
def directory(admin: ldap3.Connection) -> Iterator[ldap.LdapConnector]:
    yield connector()


@pytest.fixture
def uid(admin: ldap3.Connection) -> Iterator[str]:
    """A fresh uid, its entry deleted afterwards."""
    value = f"ada-{uuid.uuid4().hex[:10]}"
    yield value
    delete_quietly(admin, f"uid={value},ou=people,{SUFFIX}")


@pytest.fixture
def group(admin: ldap3.Connection) -> Iterator[str]:
    """A fresh groupOfNames; its first member is the admin (the class needs one)."""
    name = f"staff-{uuid.uuid4().hex[:10]}"
    dn = f"cn={name},ou=groups,{SUFFIX}"
    admin.add(dn, ["groupOfNames"], {"cn": name, "member": [ADMIN]})
    yield name
    delete_quietly(admin, dn)


def delete_quietly(admin: ldap3.Connection, dn: str) -> None:
    try:
        admin.delete(dn)
    except ldap_errors.LDAPNoSuchObjectResult:
        pass


def person(uid: str, **extra: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "given_name": "Ada",
        "surname": "Lovelace",
        "email": f"{uid}@example.com",
        **extra,
    }


def posix_person(uid: str, **extra: Any) -> dict[str, Any]:
    return person(uid, **{"uid_number": 10001, "gid_number": 10000, **extra})


def read(admin: ldap3.Connection, dn: str) -> dict[str, list[str]]:
    admin.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["*"])
    attributes = admin.response[0]["attributes"]
    return {k: [str(v) for v in vs] for k, vs in attributes.items()}


def can_bind(dn: str, password: str) -> bool:
    server = ldap3.Server(HOST, port=PORT, get_info=ldap3.NONE)
    connection = ldap3.Connection(server, user=dn, password=password)
    try:
        return bool(connection.bind())
    finally:
        connection.unbind()


async def call(directory: ldap.LdapConnector, action: str, **params: Any) -> Any:
    return await directory.call(action, params, CONTEXT)


# ------------------------------------------------------------------ create_user


async def test_ldap_create_user_adds_a_posix_person_with_a_hashed_password(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    params = posix_person(uid, login_shell="/bin/bash", password_secret="ada-password")

    result = await call(directory, "create_user", **params)

    dn = f"uid={uid},ou=people,{SUFFIX}"
    assert result == {"dn": dn, "created": True, "changed": True}
    entry = read(admin, dn)
    assert set(entry["objectClass"]) == {"inetOrgPerson", "posixAccount"}
    assert entry["cn"] == ["Ada Lovelace"] and entry["sn"] == ["Lovelace"]
    assert entry["givenName"] == ["Ada"] and entry["mail"] == [f"{uid}@example.com"]
    assert entry["uidNumber"] == ["10001"] and entry["gidNumber"] == ["10000"]
    assert entry["homeDirectory"] == [f"/home/{uid}"]
    assert entry["loginShell"] == ["/bin/bash"]
    assert not entry["userPassword"][0].startswith(USER_PASSWORD)
    assert can_bind(dn, USER_PASSWORD)


async def test_ldap_create_user_without_uid_number_is_a_plain_inet_org_person(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    result = await call(directory, "create_user", **person(uid))

    assert read(admin, result["dn"])["objectClass"] == ["inetOrgPerson"]


async def test_ldap_create_user_twice_with_equal_attributes_changes_nothing(
    directory: ldap.LdapConnector, uid: str
) -> None:
    await call(directory, "create_user", **posix_person(uid))

    again = await call(directory, "create_user", **posix_person(uid))

    assert again["created"] is False and again["changed"] is False


async def test_ldap_create_user_refuses_an_existing_user_that_differs(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    created = await call(directory, "create_user", **posix_person(uid))
    differing = posix_person(uid, email="someone.else@example.com", uid_number=10002)

    with pytest.raises(errors.ConnectorError) as caught:
        await call(directory, "create_user", **differing)

    assert caught.value.retryable is False
    assert "mail" in str(caught.value) and "uidNumber" in str(caught.value)
    assert read(admin, created["dn"])["uidNumber"] == ["10001"]


async def test_ldap_create_user_replaces_differences_when_update_existing(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    first = await call(directory, "create_user", **person(uid))
    changed = posix_person(uid, email="ada.l@example.com", update_existing=True)

    result = await call(directory, "create_user", **changed)

    entry = read(admin, first["dn"])
    assert result == {"dn": first["dn"], "created": False, "changed": True}
    assert entry["mail"] == ["ada.l@example.com"]
    assert "posixAccount" in entry["objectClass"]


async def test_ldap_create_user_reports_a_schema_violation_as_permanent(
    directory: ldap.LdapConnector, uid: str
) -> None:
    # posixAccount's login shell must be IA5 text; a non-ASCII one breaks syntax.
    params = posix_person(uid, login_shell="/bin/bäsh")

    with pytest.raises(errors.ConnectorError) as caught:
        await call(directory, "create_user", **params)

    assert caught.value.retryable is False
    assert caught.value.context["code"] == 21


async def test_ldap_create_user_takes_no_password_parameter(
    directory: ldap.LdapConnector, uid: str
) -> None:
    with pytest.raises(errors.StepInputError, match="password"):
        await call(directory, "create_user", **person(uid, password="hunter2"))


# ------------------------------------------------------------ modify, disable


async def test_ldap_modify_user_sets_and_removes_and_is_idempotent(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    created = await call(directory, "create_user", **person(uid))
    await call(directory, "modify_user", uid=uid, set={"title": "Analyst"})
    change = {"set": {"description": "Maths", "telephoneNumber": "+1 555 0100"}}

    first = await call(directory, "modify_user", uid=uid, **change, remove=["title"])
    again = await call(directory, "modify_user", uid=uid, **change, remove=["title"])

    entry = read(admin, created["dn"])
    assert first["changed"] is True and again["changed"] is False
    assert entry["telephoneNumber"] == ["+1 555 0100"]
    assert entry["description"] == ["Maths"] and "title" not in entry


async def test_ldap_modify_user_refuses_an_attribute_both_set_and_removed(
    directory: ldap.LdapConnector, uid: str
) -> None:
    with pytest.raises(errors.StepInputError, match="title"):
        await call(
            directory, "modify_user", uid=uid, set={"title": "x"}, remove=["title"]
        )


async def test_ldap_modify_user_of_a_missing_user_is_permanent(
    directory: ldap.LdapConnector, uid: str
) -> None:
    with pytest.raises(errors.ConnectorError) as caught:
        await call(directory, "modify_user", uid=uid, set={"title": "x"})

    assert caught.value.retryable is False and caught.value.context["code"] == 32


async def test_ldap_disable_user_locks_password_and_shell(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    params = posix_person(uid, login_shell="/bin/bash", password_secret="ada-password")
    created = await call(directory, "create_user", **params)

    first = await call(directory, "disable_user", uid=uid)
    again = await call(directory, "disable_user", uid=uid)

    entry = read(admin, created["dn"])
    assert first["changed"] is True and again["changed"] is False
    assert entry["loginShell"] == ["/usr/sbin/nologin"]
    assert entry["userPassword"] == ["{CRYPT}!"]
    assert not can_bind(created["dn"], USER_PASSWORD)


# ------------------------------------------------------------------- groups


async def test_ldap_group_membership_is_added_and_removed_idempotently(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str, group: str
) -> None:
    created = await call(directory, "create_user", **person(uid))
    group_dn = f"cn={group},ou=groups,{SUFFIX}"

    added = await call(directory, "add_to_group", uid=uid, group=group)
    added_again = await call(directory, "add_to_group", uid=uid, group=group)
    members = read(admin, group_dn)["member"]
    removed = await call(directory, "remove_from_group", uid=uid, group=group)
    removed_again = await call(directory, "remove_from_group", uid=uid, group=group)

    assert created["dn"] in members
    assert [added["changed"], added_again["changed"]] == [True, False]
    assert [removed["changed"], removed_again["changed"]] == [True, False]
    assert read(admin, group_dn)["member"] == [ADMIN]


async def test_ldap_add_to_group_refuses_a_missing_group_or_user(
    directory: ldap.LdapConnector, uid: str, group: str
) -> None:
    await call(directory, "create_user", **person(uid))

    with pytest.raises(errors.ConnectorError) as no_group:
        await call(directory, "add_to_group", uid=uid, group="no-such-group")
    with pytest.raises(errors.ConnectorError) as no_user:
        await call(directory, "add_to_group", uid=f"{uid}-x", group=group)

    assert no_group.value.context["code"] == 32 and not no_group.value.retryable
    assert no_user.value.context["code"] == 32 and not no_user.value.retryable


# --------------------------------------------------------------------- find


async def test_ldap_find_users_matches_exactly_or_by_prefix(
    directory: ldap.LdapConnector, uid: str
) -> None:
    created = await call(directory, "create_user", **person(uid))

    exact = await call(directory, "find_users", uid=uid, attributes=["mail"])
    prefix = await call(directory, "find_users", mail=uid[:8], match="prefix")

    assert exact == {
        "users": [
            {"dn": created["dn"], "attributes": {"mail": [f"{uid}@example.com"]}}
        ],
        "truncated": False,
    }
    assert created["dn"] in [user["dn"] for user in prefix["users"]]


async def test_ldap_find_users_takes_a_value_as_data_never_as_filter(
    directory: ldap.LdapConnector, uid: str
) -> None:
    await call(directory, "create_user", **person(uid))

    found = await call(directory, "find_users", uid="*)(uid=*")

    assert found == {"users": [], "truncated": False}


async def test_ldap_find_users_says_when_the_size_limit_cut_the_answer(
    directory: ldap.LdapConnector, admin: ldap3.Connection, uid: str
) -> None:
    await call(directory, "create_user", **person(uid))
    second = await call(directory, "create_user", **person(f"{uid}-2"))

    try:
        found = await call(
            directory, "find_users", uid=uid, match="prefix", size_limit=1
        )
    finally:
        delete_quietly(admin, second["dn"])

    assert len(found["users"]) == 1 and found["truncated"] is True


# ------------------------------------------------------------------- errors


async def test_ldap_wrong_password_is_permanent_and_never_shown(
    slapd: None,
) -> None:
    wrong = "Wrong-pw-9q8z"
    settings = ldap.LdapSettings.model_validate(
        {"url": URL, "bind_dn": ADMIN, "password_secret": "d", "base_dn": SUFFIX}
    )
    directory = ldap.LdapConnector("directory", settings, SecretStore({"d": wrong}))

    with pytest.raises(errors.ConnectorError) as caught:
        await call(directory, "find_users", uid="ada")

    assert caught.value.retryable is False
    assert caught.value.context["code"] == 49
    assert "invalidCredentials" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.context)


async def test_ldap_closed_port_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    directory = connector(url=f"ldap://{HOST}:{port}")

    with pytest.raises(errors.TransportError) as caught:
        await call(directory, "find_users", uid="ada")

    assert caught.value.retryable is True
    assert ADMIN_PASSWORD not in str(caught.value)


async def test_ldap_refuses_a_metadata_address() -> None:
    directory = connector(url="ldap://169.254.169.254:389")

    with pytest.raises(errors.BlockedAddressError):
        await call(directory, "find_users", uid="ada")


@pytest.mark.parametrize(
    "url",
    [
        "http://ldap.example.com",  # not LDAP
        "ldap://admin:pw@ldap.example.com",  # credentials in the URL
        "ldap://ldap.example.com/dc=example,dc=com",  # a base DN in the URL
    ],
)
def test_ldap_settings_refuse_a_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        ldap.LdapSettings.model_validate(
            {"url": url, "bind_dn": ADMIN, "base_dn": SUFFIX}
        )


def test_ldap_settings_default_users_and_groups_under_the_base() -> None:
    settings = ldap.LdapSettings.model_validate(
        {"url": URL, "bind_dn": ADMIN, "base_dn": SUFFIX}
    )

    assert settings.users_dn == f"ou=people,{SUFFIX}"
    assert settings.groups_dn == f"ou=groups,{SUFFIX}"


def ldap3_exception_types() -> list[type[ldap_errors.LDAPException]]:
    return [
        cls
        for _, cls in inspect.getmembers(ldap_errors, inspect.isclass)
        if issubclass(cls, ldap_errors.LDAPException)
        and not issubclass(cls, ldap_errors.LDAPOperationResult)
    ]


def test_ldap_error_maps_every_ldap3_exception() -> None:
    directory = connector()
    foreign: list[ldap_errors.LDAPException] = [
        ldap_errors.LDAPOperationResult(result=code, description=name, message="m")
        for code, name in enumerate(["x"] * 124)
    ]
    foreign += [cls("boom") for cls in ldap3_exception_types()]

    mapped = [directory.error(exc, "find_users") for exc in foreign]

    assert all(isinstance(error, errors.ConnectorError) for error in mapped)
    retryable = {e.context.get("code") for e in mapped if e.retryable}
    assert retryable == {3, 51, 52, None}
