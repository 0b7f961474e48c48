"""Mapping an ID token's claim to roles."""

from __future__ import annotations

from lobflows.web import oidc

ROLE_MAP = {"ops": "operator", "finance": "approver"}


def test_mapped_roles_takes_every_mapped_value_of_a_list():
    claim = ["finance", "ops", "staff"]
    assert oidc.mapped_roles(claim, ROLE_MAP) == ["approver", "operator"]


def test_mapped_roles_takes_a_single_value():
    assert oidc.mapped_roles("ops", ROLE_MAP) == ["operator"]


def test_mapped_roles_is_empty_without_a_mapped_value():
    assert oidc.mapped_roles(["staff"], ROLE_MAP) == []
    assert oidc.mapped_roles(None, ROLE_MAP) == []
    assert oidc.mapped_roles([{"ops": 1}], ROLE_MAP) == []
