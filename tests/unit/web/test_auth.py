"""Roles and permissions, safe redirects, and role checks."""

from __future__ import annotations

import pytest

from lobflows.web import auth


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", {"view"}),
        ("approver", {"view", "decide"}),
        ("operator", {"view", "decide", "operate", "secrets"}),
        ("admin", {"view", "decide", "operate", "secrets", "admin"}),
    ],
)
def test_principal_can_exactly_what_its_role_carries(role: str, allowed: set[str]):
    principal = auth.Principal("p", frozenset({role}), "session")
    assert {p for p in auth.PERMISSIONS if principal.can(p)} == allowed


def test_principal_with_several_roles_has_the_union():
    principal = auth.Principal("p", frozenset({"viewer", "approver"}), "token")
    assert principal.can("decide") and not principal.can("operate")


def test_principal_refuses_an_unknown_permission_by_name():
    with pytest.raises(ValueError, match="unknown permission 'fly'"):
        auth.Principal("p", frozenset({"admin"}), "session").can("fly")


def test_a_link_principal_has_no_permission():
    link = auth.Principal("ann@example.com", frozenset(), "link")
    assert not any(link.can(p) for p in auth.PERMISSIONS)


def test_principal_is_called_by_name_or_email_without_regard_to_case():
    principal = auth.Principal("ann", frozenset(), "token", "Ann@Example.com")
    assert principal.is_called("ANN@example.com") and principal.is_called("ann")
    assert not principal.is_called("") and not principal.is_called("bob")
    assert principal.assignee == "Ann@Example.com"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/runs/1?x=2", "/runs/1?x=2"),  # a local path is kept
        ("//evil.example.com/", "/"),  # scheme-relative: another host
        ("/\\evil.example.com", "/"),  # browsers read a backslash as a slash
        ("https://evil.example.com/", "/"),  # absolute URL
        ("runs", "/"),  # not a path
        ("/a\nb", "/"),  # control characters
        (None, "/"),
    ],
)
def test_local_path_keeps_only_paths_on_this_site(target, expected):
    assert auth.local_path(target) == expected


def test_check_roles_sorts_and_names_the_known_roles():
    assert auth.check_roles(["operator", "viewer", "operator"]) == [
        "operator",
        "viewer",
    ]
    with pytest.raises(ValueError, match="unknown role 'boss'; expected one of"):
        auth.check_roles(["boss"])
    with pytest.raises(ValueError, match="at least one role"):
        auth.check_roles([])
