"""The erpnext connector against the ERPNext stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import base, erpnext
from lobflows.secrets import SecretStore
from lobflows.testing import ErpnextState, ServerThread, create_erpnext_app

pytestmark = pytest.mark.integration

KEY, SECRET = "erp-key-7", "erp-secret-value-7"
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="p2p", step="s", attempt=1, timeout_seconds=5
)
ORDER = {
    "supplier": "Acme Office Supplies",
    "company": "Example Corp",
    "schedule_date": "2099-01-31",
    "items": [{"item_code": "PAPER-A4", "qty": 10, "rate": 4.5}],
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(create_erpnext_app(api_key=KEY, api_secret=SECRET)) as srv:
        yield srv


@pytest.fixture
def state(server: ServerThread) -> ErpnextState:
    erp: ErpnextState = server.app.state.erpnext  # type: ignore[attr-defined]
    erp.reset()
    return erp


@pytest.fixture
async def erp(
    server: ServerThread, state: ErpnextState
) -> AsyncIterator[erpnext.ErpnextConnector]:
    settings = erpnext.ErpnextSettings.model_validate(
        {"base_url": server.url, "auth_secret": "erpnext-api"}
    )
    connector = erpnext.ErpnextConnector(
        "erp", settings, SecretStore({"erpnext-api": f"{KEY}:{SECRET}"})
    )
    yield connector
    await connector.close()


async def call(connector: erpnext.ErpnextConnector, action: str, **params: Any) -> Any:
    return await connector.call(action, params, CONTEXT)


async def new_order(connector: erpnext.ErpnextConnector, **changes: Any) -> str:
    doc = await call(
        connector, "create", doctype="Purchase Order", doc={**ORDER, **changes}
    )
    return str(doc["name"])


async def failure(
    connector: erpnext.ErpnextConnector, action: str, **params: Any
) -> errors.RemoteStatusError:
    with pytest.raises(errors.RemoteStatusError) as caught:
        await call(connector, action, **params)
    return caught.value


# ------------------------------------------------------------------ update


async def test_erpnext_update_changes_only_the_fields_sent(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    todo = await call(erp, "create", doctype="ToDo", doc={"description": "old"})

    updated = await call(
        erp,
        "update",
        doctype="ToDo",
        name=todo["name"],
        doc={"description": "new"},
    )

    assert (updated["description"], updated["priority"]) == ("new", "Medium")
    assert state.docs["ToDo"][todo["name"]]["description"] == "new"


async def test_erpnext_update_of_submitted_order_fails_for_good(
    erp: erpnext.ErpnextConnector,
) -> None:
    name = await new_order(erp, docstatus=1)

    error = await failure(
        erp,
        "update",
        doctype="Purchase Order",
        name=name,
        doc={"supplier": "Northwind Hardware"},
    )

    assert (error.status, error.retryable) == (417, False)
    assert error.context["exc_type"] == "UpdateAfterSubmitError"
    assert str(error) == (
        f"ERPNext update Purchase Order {name} failed with 417 "
        "UpdateAfterSubmitError: Not allowed to change Supplier after submission "
        "from Acme Office Supplies to Northwind Hardware"
    )


@pytest.mark.parametrize(
    "params",
    [
        {"doctype": "ToDo", "name": "x", "doc": {}},  # nothing to change
        {"doctype": "ToDo", "doc": {"a": 1}},  # no name
        {"doctype": "ToDo", "name": "x", "doc": {"a": 1}, "extra": 1},
    ],
)
async def test_erpnext_update_refuses_bad_input_before_calling(
    erp: erpnext.ErpnextConnector, state: ErpnextState, params: dict[str, Any]
) -> None:
    with pytest.raises(errors.StepInputError, match="erp.update got invalid input"):
        await erp.call("update", params, CONTEXT)
    assert state.request_counts == {}


# -------------------------------------------------------------------- list


@pytest.fixture
async def todos(erp: erpnext.ErpnextConnector) -> list[str]:
    names = []
    for i in range(45):
        doc = {"description": f"task {i:02d}", "priority": ["Low", "High"][i % 2]}
        names.append((await call(erp, "create", doctype="ToDo", doc=doc))["name"])
    return names


async def test_erpnext_list_defaults_to_twenty_names(
    erp: erpnext.ErpnextConnector, todos: list[str]
) -> None:
    rows = await call(erp, "list", doctype="ToDo")
    assert len(rows) == 20
    assert set(rows[0]) == {"name"}


async def test_erpnext_list_pages_with_limit_start(
    erp: erpnext.ErpnextConnector, state: ErpnextState, todos: list[str]
) -> None:
    pages = []
    for start in range(0, 50, 20):
        page = await call(
            erp,
            "list",
            doctype="ToDo",
            order_by="creation asc",
            limit=20,
            limit_start=start,
        )
        pages.append([row["name"] for row in page])

    assert [len(p) for p in pages] == [20, 20, 5]
    assert [name for page in pages for name in page] == todos
    assert state.request_counts["GET /api/resource/ToDo"] == 3


@pytest.mark.parametrize(
    "filters",
    [
        [["priority", "=", "High"], ["description", "like", "task 1%"]],
        {"priority": "High", "description": ["like", "task 1%"]},
        [["ToDo", "priority", "=", "High"], ["description", "like", "task 1%"]],
    ],
    ids=["list", "mapping", "with-doctype"],
)
async def test_erpnext_list_applies_filters_fields_and_order(
    erp: erpnext.ErpnextConnector, todos: list[str], filters: Any
) -> None:
    rows = await call(
        erp,
        "list",
        doctype="ToDo",
        filters=filters,
        fields=["name", "description"],
        order_by="description desc",
    )
    assert [row["description"] for row in rows] == [
        f"task {i}" for i in (19, 17, 15, 13, 11)
    ]
    assert rows[0]["name"] == todos[19]


async def test_erpnext_list_filters_on_child_table_rows(
    erp: erpnext.ErpnextConnector,
) -> None:
    order = await new_order(erp, docstatus=1)
    await new_order(erp)
    row = {"item_code": "PAPER-A4", "qty": 10, "rate": 4.5, "purchase_order": order}
    receipt = await call(
        erp,
        "create",
        doctype="Purchase Receipt",
        doc={**ORDER, "items": [row]},
    )

    rows = await call(
        erp,
        "list",
        doctype="Purchase Receipt",
        filters=[["Purchase Receipt Item", "purchase_order", "=", order]],
        fields=["name", "grand_total"],
    )

    assert rows == [{"name": receipt["name"], "grand_total": 45.0}]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"limit": 1001}, "limit: input should be less than or equal to 1000"),
        ({"limit": 0}, "limit: input should be greater than or equal to 1"),
        ({"limit_start": -1}, "limit_start: input should be greater than"),
        ({"filters": [["priority", "High"]]}, "filters"),
        ({"fields": []}, "fields: list should have at least 1 item"),
    ],
)
async def test_erpnext_list_refuses_bad_parameters(
    erp: erpnext.ErpnextConnector,
    state: ErpnextState,
    params: dict[str, Any],
    problem: str,
) -> None:
    with pytest.raises(errors.StepInputError, match=problem):
        await call(erp, "list", doctype="ToDo", **params)
    assert state.request_counts == {}


async def test_erpnext_list_of_unknown_doctype_fails_for_good(
    erp: erpnext.ErpnextConnector,
) -> None:
    error = await failure(erp, "list", doctype="Spaceship")
    assert (error.status, error.retryable) == (404, False)
    assert "DocType Spaceship not found" in str(error)


# ---------------------------------------------------------- submit, cancel


async def test_erpnext_submit_moves_a_draft_to_submitted(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp)

    doc = await call(erp, "submit", doctype="Purchase Order", name=name)

    assert doc["docstatus"] == 1
    assert doc["items"][0]["docstatus"] == 1
    assert state.docs["Purchase Order"][name]["docstatus"] == 1


async def test_erpnext_submit_again_returns_the_submitted_document(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    # A retried submit must not fail: Frappe saves it as an unchanged update.
    name = await new_order(erp, docstatus=1)

    doc = await call(erp, "submit", doctype="Purchase Order", name=name)

    assert (doc["name"], doc["docstatus"]) == (name, 1)
    assert state.docs["Purchase Order"][name]["grand_total"] == 45.0


async def test_erpnext_submit_of_cancelled_document_fails_for_good(
    erp: erpnext.ErpnextConnector,
) -> None:
    name = await new_order(erp, docstatus=1)
    await call(erp, "cancel", doctype="Purchase Order", name=name)

    error = await failure(erp, "submit", doctype="Purchase Order", name=name)

    assert (error.status, error.retryable) == (417, False)
    assert error.context["exc_type"] == "ValidationError"
    assert str(error).endswith(
        f"submit Purchase Order {name} failed with 417 ValidationError: "
        "Cannot edit cancelled document"
    )


async def test_erpnext_submit_of_doctype_that_is_not_submittable_is_refused(
    erp: erpnext.ErpnextConnector,
) -> None:
    todo = await call(erp, "create", doctype="ToDo", doc={"description": "x"})
    with pytest.raises(errors.StepInputError, match="is ToDo a submittable doc type"):
        await call(erp, "submit", doctype="ToDo", name=todo["name"])


async def test_erpnext_cancel_moves_a_submitted_document_to_cancelled(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    # An invoice without bill_no, and rows without purchase_order: nulls stored.
    invoice = {**ORDER, "docstatus": 1}
    del invoice["schedule_date"]
    created = await call(erp, "create", doctype="Purchase Invoice", doc=invoice)
    name = created["name"]
    assert state.docs["Purchase Invoice"][name]["bill_no"] is None

    doc = await call(erp, "cancel", doctype="Purchase Invoice", name=name)

    assert (doc["name"], doc["docstatus"]) == (name, 2)
    # The method answer carries nulls; the connector drops them like GET does.
    assert "bill_no" not in doc
    assert "purchase_order" not in doc["items"][0]
    assert doc["items"][0]["item_code"] == "PAPER-A4"
    assert state.docs["Purchase Invoice"][name]["docstatus"] == 2
    assert state.request_counts["POST /api/method/frappe.client.cancel"] == 1


@pytest.mark.parametrize(
    ("docstatus", "exc_type", "message"),
    [
        # already cancelled
        (2, "ValidationError", "Cannot edit cancelled document"),
        # still a draft
        (
            0,
            "DocstatusTransitionError",
            "Cannot change docstatus from 0 (Draft) to 2 (Cancelled)",
        ),
    ],
)
async def test_erpnext_cancel_fails_for_good_unless_submitted(
    erp: erpnext.ErpnextConnector, docstatus: int, exc_type: str, message: str
) -> None:
    name = await new_order(erp, docstatus=min(docstatus, 1))
    if docstatus == 2:
        await call(erp, "cancel", doctype="Purchase Order", name=name)

    error = await failure(erp, "cancel", doctype="Purchase Order", name=name)

    assert (error.status, error.retryable) == (417, False)
    assert error.context["exc_type"] == exc_type
    assert str(error) == (
        f"ERPNext cancel Purchase Order {name} failed with 417 {exc_type}: {message}"
    )


async def test_erpnext_cancel_of_linked_order_names_the_linking_receipt(
    erp: erpnext.ErpnextConnector,
) -> None:
    order = await new_order(erp, docstatus=1)
    row = {"item_code": "PAPER-A4", "qty": 10, "purchase_order": order}
    receipt = await call(
        erp,
        "create",
        doctype="Purchase Receipt",
        doc={**ORDER, "items": [row], "docstatus": 1},
    )

    error = await failure(erp, "cancel", doctype="Purchase Order", name=order)

    assert error.context["exc_type"] == "LinkExistsError"
    assert str(error).endswith(
        f"Cannot delete or cancel because Purchase Order {order} is linked with "
        f"Purchase Receipt {receipt['name']} at Row: 1"
    )


# ------------------------------------------------------------------ delete


async def test_erpnext_delete_removes_the_document(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp)

    result = await call(erp, "delete", doctype="Purchase Order", name=name)

    assert result == {"doctype": "Purchase Order", "name": name, "deleted": True}
    assert state.docs["Purchase Order"] == {}


async def test_erpnext_delete_of_missing_document_counts_as_deleted(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp)
    await call(erp, "delete", doctype="Purchase Order", name=name)

    again = await call(erp, "delete", doctype="Purchase Order", name=name)

    assert again == {"doctype": "Purchase Order", "name": name, "deleted": False}
    path = f"/api/resource/Purchase Order/{name}"
    assert state.request_counts[f"DELETE {path}"] == 2


async def test_erpnext_delete_in_unknown_doctype_is_not_taken_for_success(
    erp: erpnext.ErpnextConnector,
) -> None:
    error = await failure(erp, "delete", doctype="Purchse Order", name="X")
    assert (error.status, error.context["exc_type"]) == (404, "DoesNotExistError")


async def test_erpnext_delete_of_submitted_document_fails_for_good(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp, docstatus=1)

    error = await failure(erp, "delete", doctype="Purchase Order", name=name)

    assert (error.status, error.retryable) == (417, False)
    assert "Submitted Record cannot be deleted. You must Cancel it first." in str(error)
    assert name in state.docs["Purchase Order"]


async def test_erpnext_delete_after_cancel_undoes_a_submitted_order(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp, docstatus=1)

    await call(erp, "cancel", doctype="Purchase Order", name=name)
    result = await call(erp, "delete", doctype="Purchase Order", name=name)

    assert result["deleted"] is True
    assert state.docs["Purchase Order"] == {}


async def test_erpnext_delete_during_maintenance_is_retryable(
    erp: erpnext.ErpnextConnector, state: ErpnextState
) -> None:
    name = await new_order(erp)
    state.add_fault(503, headers={"Retry-After": "3"}, match="DELETE /api/resource/*")

    error = await failure(erp, "delete", doctype="Purchase Order", name=name)

    assert (error.status, error.retryable, error.retry_after_seconds) == (503, True, 3)
    assert error.context["exc_type"] == "SessionStopped"
    assert name in state.docs["Purchase Order"]


async def test_erpnext_call_method_returns_the_message(erp, state):
    await call(erp, "create", doctype="Supplier", doc={"supplier_name": "Brightline"})

    count = await call(
        erp,
        "call_method",
        method="frappe.client.get_count",
        args={"doctype": "Supplier", "filters": {"supplier_name": "Brightline"}},
        http_method="GET",
    )

    assert count == 1


async def test_erpnext_list_takes_or_filters(erp, state):
    rows = await call(
        erp,
        "list",
        doctype="Item",
        fields=["item_code"],
        or_filters=[["item_code", "=", "LAPTOP-14"], ["item_code", "=", "PAPER-A4"]],
        order_by="item_code asc",
    )

    assert [r["item_code"] for r in rows] == ["LAPTOP-14", "PAPER-A4"]


async def test_erpnext_call_method_unknown_is_a_permanent_error(erp):
    with pytest.raises(errors.RemoteStatusError) as refused:
        await call(erp, "call_method", method="lobflows.no_such_method", args={})
    assert not refused.value.retryable
    assert "Failed to get method" in str(refused.value)
