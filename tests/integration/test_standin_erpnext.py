"""The ERPNext stand-in follows the Frappe v1 REST contract."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lobflows.testing import ErpnextState, ServerThread, create_erpnext_app

pytestmark = pytest.mark.integration

KEY, SECRET = "key-123", "secret-456"
TOKEN = {"Authorization": f"token {KEY}:{SECRET}", "Accept": "application/json"}

EMPLOYEE = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "gender": "Female",
    "date_of_birth": "1990-12-10",
    "date_of_joining": "2024-01-15",
    "company": "Example Corp",
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
def api(server: ServerThread, state: ErpnextState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=TOKEN, timeout=10) as client:
        yield client


@pytest.fixture
def control(server: ServerThread, state: ErpnextState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode Frappe's double-encoded _server_messages."""
    return [json.loads(m) for m in json.loads(body["_server_messages"])]


def create(api: httpx.Client, doctype: str, doc: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/api/resource/{doctype}", json=doc)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def list_names(api: httpx.Client, doctype: str, **params: Any) -> list[str]:
    encoded = {
        k: v if isinstance(v, str | int) else json.dumps(v) for k, v in params.items()
    }
    response = api.get(f"/api/resource/{doctype}", params=encoded)
    assert response.status_code == 200, response.text
    return [row["name"] for row in response.json()["data"]]


# ------------------------------------------------------------------ auth


def test_erpnext_token_auth_lists_seeded_genders(api: httpx.Client) -> None:
    names = list_names(api, "Gender", order_by="name asc")
    assert names == ["Female", "Male", "Other", "Prefer not to say"]


def test_erpnext_basic_auth_is_accepted(server: ServerThread, state: Any) -> None:
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    response = httpx.get(
        f"{server.url}/api/resource/Company",
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200
    assert response.json() == {"data": [{"name": "Example Corp"}]}


@pytest.mark.parametrize(
    "header",
    [
        f"token {KEY}:wrong",
        "token nocolon",
        f"Basic {base64.b64encode(b'k:x').decode()}",
    ],
)
def test_erpnext_wrong_pair_is_401_authentication_error(
    control: httpx.Client, header: str
) -> None:
    response = control.get("/api/resource/ToDo", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["exc_type"] == "AuthenticationError"


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"token  {KEY}:{SECRET}"}])
def test_erpnext_missing_or_malformed_header_is_403_permission_error(
    control: httpx.Client, headers: dict[str, str]
) -> None:
    response = control.get("/api/resource/ToDo", headers=headers)
    assert response.status_code == 403
    body = response.json()
    assert body["exc_type"] == "PermissionError"
    assert set(body) == {"exc_type", "_server_messages"}


def test_erpnext_badly_encoded_basic_is_400(control: httpx.Client) -> None:
    response = control.get("/api/resource/ToDo", headers={"Authorization": "Basic %%%"})
    assert response.status_code == 400
    assert response.json()["exc_type"] == "InvalidAuthorizationToken"


# -------------------------------------------------------------- documents


def test_erpnext_create_employee_names_from_series_and_drops_nulls(
    api: httpx.Client, state: ErpnextState
) -> None:
    first = create(api, "Employee", EMPLOYEE)
    second = create(api, "Employee", {**EMPLOYEE, "first_name": "Grace"})
    assert (first["name"], second["name"]) == ("HR-EMP-00001", "HR-EMP-00002")
    assert first["employee_name"] == "Ada Lovelace"
    assert first["status"] == "Active"
    assert first["doctype"] == "Employee"
    assert first["docstatus"] == 0
    assert first["idx"] == 0
    assert {"owner", "creation", "modified", "modified_by"} <= set(first)
    assert None not in first.values()
    assert state.docs["Employee"]["HR-EMP-00002"]["first_name"] == "Grace"


def test_erpnext_get_omits_nulls_while_inspection_keeps_them(
    api: httpx.Client, control: httpx.Client
) -> None:
    name = create(api, "Employee", EMPLOYEE)["name"]
    doc = api.get(f"/api/resource/Employee/{name}").json()["data"]
    assert doc["first_name"] == "Ada"
    assert "middle_name" not in doc
    full = control.get("/__standin__/docs/Employee").json()
    assert full[0]["name"] == name
    assert full[0]["middle_name"] is None


def test_erpnext_create_reads_form_field_data(api: httpx.Client) -> None:
    response = api.post(
        "/api/resource/ToDo", data={"data": json.dumps({"description": "from form"})}
    )
    assert response.status_code == 200
    assert response.json()["data"]["description"] == "from form"


def test_erpnext_unknown_fields_are_stored_as_custom_fields(api: httpx.Client) -> None:
    created = create(api, "Employee", {**EMPLOYEE, "lobflows_ref": "corr-1"})
    assert created["lobflows_ref"] == "corr-1"
    found = list_names(api, "Employee", filters={"lobflows_ref": "corr-1"})
    assert found == [created["name"]]
    assert list_names(api, "Employee", filters={"lobflows_ref": "corr-2"}) == []


def test_erpnext_missing_fields_give_mandatory_error_per_field(
    api: httpx.Client, state: ErpnextState
) -> None:
    response = api.post("/api/resource/Employee", json={"first_name": "Ada"})
    assert response.status_code == 417
    body = response.json()
    assert body["exc_type"] == "MandatoryError"
    assert [m["message"] for m in messages(body)] == [
        "Error: Value missing for Employee: Gender",
        "Error: Value missing for Employee: Date of Birth",
        "Error: Value missing for Employee: Date of Joining",
        "Error: Value missing for Employee: Company",
    ]
    assert state.docs["Employee"] == {}


def test_erpnext_tracebacks_option_adds_mandatory_error_text() -> None:
    app = create_erpnext_app(api_key=KEY, api_secret=SECRET, tracebacks=True)
    with ServerThread(app) as srv:
        response = httpx.post(
            f"{srv.url}/api/resource/Employee", headers=TOKEN, json={"first_name": "A"}
        )
    assert response.json()["exception"] == (
        "frappe.exceptions.MandatoryError: "
        "[Employee, new]: gender, date_of_birth, date_of_joining, company"
    )


def test_erpnext_left_employee_needs_relieving_date(api: httpx.Client) -> None:
    response = api.post("/api/resource/Employee", json={**EMPLOYEE, "status": "Left"})
    assert response.json()["exc_type"] == "MandatoryError"
    assert "Relieving Date" in messages(response.json())[0]["message"]


def test_erpnext_broken_link_is_link_validation_error(api: httpx.Client) -> None:
    response = api.post("/api/resource/Employee", json={**EMPLOYEE, "gender": "Robot"})
    assert response.status_code == 417
    assert response.json()["exc_type"] == "LinkValidationError"
    assert messages(response.json())[0]["message"] == "Could not find Gender: Robot"


def test_erpnext_bad_date_is_validation_error_naming_field(api: httpx.Client) -> None:
    doc = {**EMPLOYEE, "date_of_birth": "10/12/1990"}
    response = api.post("/api/resource/Employee", json=doc)
    assert response.status_code == 417
    assert response.json()["exc_type"] == "ValidationError"
    assert "Date of Birth" in messages(response.json())[0]["message"]


def test_erpnext_bad_select_value_is_validation_error(api: httpx.Client) -> None:
    response = api.post("/api/resource/Employee", json={**EMPLOYEE, "status": "Gone"})
    assert response.status_code == 417
    assert "Status" in messages(response.json())[0]["message"]


def test_erpnext_user_is_named_by_lowercased_email(api: httpx.Client) -> None:
    user = create(api, "User", {"email": "Ada@Example.com", "first_name": "Ada"})
    assert user["name"] == "ada@example.com"
    assert user["full_name"] == "Ada"


def test_erpnext_duplicate_user_is_409_duplicate_entry(api: httpx.Client) -> None:
    create(api, "User", {"email": "ada@example.com", "first_name": "Ada"})
    response = api.post(
        "/api/resource/User", json={"email": "ADA@example.com", "first_name": "A"}
    )
    assert response.status_code == 409
    body = response.json()
    assert body["exc_type"] == "DuplicateEntryError"
    [message] = messages(body)
    assert message["message"] == "User <strong>ada@example.com</strong> already exists"
    assert message["title"] == "Duplicate Name"


def test_erpnext_invalid_user_email_is_rejected(api: httpx.Client) -> None:
    response = api.post("/api/resource/User", json={"email": "x", "first_name": "A"})
    assert response.status_code == 417
    assert response.json()["exc_type"] == "InvalidEmailAddressError"


def test_erpnext_todo_gets_hash_name_and_needs_description(api: httpx.Client) -> None:
    todo = create(api, "ToDo", {"description": "call Ada"})
    assert len(todo["name"]) == 10
    assert todo["status"] == "Open"
    response = api.post("/api/resource/ToDo", json={})
    assert response.json()["exc_type"] == "MandatoryError"


def test_erpnext_material_request_needs_nothing(api: httpx.Client) -> None:
    doc = create(api, "Material Request", {})
    assert doc["name"].startswith("MAT-MR-")
    assert doc["name"].endswith("-00001")


def test_erpnext_put_merges_fields(api: httpx.Client) -> None:
    name = create(api, "Employee", EMPLOYEE)["name"]
    response = api.put(f"/api/resource/Employee/{name}", json={"last_name": "King"})
    assert response.status_code == 200
    doc = api.get(f"/api/resource/Employee/{name}").json()["data"]
    assert (doc["first_name"], doc["last_name"]) == ("Ada", "King")
    assert doc["employee_name"] == "Ada King"


def test_erpnext_put_with_stale_modified_is_timestamp_mismatch(
    api: httpx.Client,
) -> None:
    doc = create(api, "ToDo", {"description": "a"})
    api.put(f"/api/resource/ToDo/{doc['name']}", json={"description": "b"})
    stale = {"description": "c", "modified": doc["modified"]}
    response = api.put(f"/api/resource/ToDo/{doc['name']}", json=stale)
    assert response.status_code == 417
    assert response.json()["exc_type"] == "TimestampMismatchError"


def test_erpnext_delete_returns_202_then_get_is_404(api: httpx.Client) -> None:
    name = create(api, "ToDo", {"description": "bye"})["name"]
    response = api.delete(f"/api/resource/ToDo/{name}")
    assert (response.status_code, response.json()) == (202, {"data": "ok"})
    gone = api.get(f"/api/resource/ToDo/{name}")
    assert gone.status_code == 404
    assert gone.json()["exc_type"] == "DoesNotExistError"


def test_erpnext_delete_of_linked_doc_is_refused(api: httpx.Client) -> None:
    create(api, "Employee", EMPLOYEE)
    response = api.delete("/api/resource/Gender/Female")
    assert response.status_code == 417
    assert response.json()["exc_type"] == "LinkExistsError"


@pytest.mark.parametrize(
    "path",
    ["/api/resource/Spaceship", "/api/resource/ToDo/nope", "/api/whatever/else"],
)
def test_erpnext_unknown_targets_are_404_does_not_exist(
    api: httpx.Client, path: str
) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response.json()["exc_type"] == "DoesNotExistError"
    assert messages(response.json())


def test_erpnext_v1_prefix_and_trailing_slash_work(api: httpx.Client) -> None:
    response = api.get("/api/v1/resource/Company/")
    assert response.json() == {"data": [{"name": "Example Corp"}]}


def test_erpnext_names_with_spaces_and_slashes_round_trip(api: httpx.Client) -> None:
    create(api, "Gender", {"gender": "Non/binary option"})
    response = api.get("/api/resource/Gender/Non%2Fbinary%20option")
    assert response.json()["data"]["gender"] == "Non/binary option"


# ------------------------------------------------------------------ lists


@pytest.fixture
def todos(api: httpx.Client) -> list[str]:
    names = []
    for i in range(45):
        doc = {"description": f"task {i:02d}", "priority": ["Low", "High"][i % 2]}
        names.append(create(api, "ToDo", doc)["name"])
    return names


def test_erpnext_list_pages_twenty_at_a_time(
    api: httpx.Client, todos: list[str]
) -> None:
    pages = [
        list_names(api, "ToDo", order_by="creation asc", limit_start=start)
        for start in (0, 20, 40)
    ]
    assert [len(p) for p in pages] == [20, 20, 5]
    assert [name for page in pages for name in page] == todos


def test_erpnext_list_page_length_zero_means_all(
    api: httpx.Client, todos: list[str]
) -> None:
    assert len(list_names(api, "ToDo", limit_page_length=0)) == 45
    assert len(list_names(api, "ToDo", limit=7)) == 7


def test_erpnext_list_defaults_to_name_and_modified_desc(
    api: httpx.Client, todos: list[str]
) -> None:
    response = api.get("/api/resource/ToDo")
    rows = response.json()["data"]
    assert rows[0] == {"name": todos[-1]}
    assert [r["name"] for r in rows] == todos[::-1][:20]


def test_erpnext_list_star_fields_return_all_columns(
    api: httpx.Client, todos: list[str]
) -> None:
    response = api.get("/api/resource/ToDo", params={"fields": '["*"]', "limit": 1})
    [row] = response.json()["data"]
    assert {"name", "description", "priority", "creation"} <= set(row)
    assert row["allocated_to"] is None
    assert "doctype" not in row


def test_erpnext_list_named_fields_and_alias(
    api: httpx.Client, todos: list[str]
) -> None:
    params = {"fields": '["name", "description as d"]', "order_by": "creation asc"}
    rows = api.get("/api/resource/ToDo", params={**params, "limit": 1}).json()["data"]
    assert rows == [{"name": todos[0], "d": "task 00"}]


@pytest.mark.parametrize(
    "filters",
    [
        [["priority", "=", "High"]],
        [["ToDo", "priority", "=", "High"]],
        {"priority": "High"},
        {"priority": ["=", "High"]},
        [{"priority": "high"}],
    ],
    ids=["list3", "list4", "dict-eq", "dict-op", "list-of-dict"],
)
def test_erpnext_list_accepts_each_filter_shape(
    api: httpx.Client, todos: list[str], filters: Any
) -> None:
    names = list_names(api, "ToDo", filters=filters, limit_page_length=0)
    assert sorted(names) == sorted(todos[1::2])


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("=", "task 03", [3]),
        ("!=", "task 03", [i for i in range(45) if i != 3]),
        ("<", "task 02", [0, 1]),
        (">", "task 42", [43, 44]),
        ("<=", "task 01", [0, 1]),
        (">=", "task 44", [44]),
        ("like", "task 1%", list(range(10, 20))),
        ("like", "%_4", [4, 14, 24, 34, 44]),
        ("not like", "task _%0", [i for i in range(45) if i % 10]),
        ("in", ["task 05", "task 06"], [5, 6]),
        ("in", "task 05, task 07", [5, 7]),
        ("not in", [f"task {i:02d}" for i in range(44)], [44]),
        ("between", ["task 10", "task 12"], [10, 11, 12]),
        ("is", "set", list(range(45))),
        ("is", "not set", []),
    ],
)
def test_erpnext_list_filter_operators(
    api: httpx.Client, todos: list[str], op: str, value: Any, expected: list[int]
) -> None:
    names = list_names(
        api, "ToDo", filters=[["description", op, value]], limit_page_length=0
    )
    assert sorted(names) == sorted(todos[i] for i in expected)


def test_erpnext_list_is_not_set_matches_empty_fields(
    api: httpx.Client, todos: list[str]
) -> None:
    unassigned = list_names(
        api, "ToDo", filters=[["allocated_to", "is", "not set"]], limit=0
    )
    assert len(unassigned) == 45


def test_erpnext_list_or_filters_are_anded_with_filters(
    api: httpx.Client, todos: list[str]
) -> None:
    names = list_names(
        api,
        "ToDo",
        filters=[["priority", "=", "Low"]],
        or_filters=[["description", "=", "task 00"], ["description", "=", "task 01"]],
    )
    assert names == [todos[0]]


def test_erpnext_list_order_by_several_keys(
    api: httpx.Client, todos: list[str]
) -> None:
    names = list_names(
        api, "ToDo", order_by="priority asc, creation desc", limit_page_length=0
    )
    high = todos[1::2][::-1]
    low = todos[0::2][::-1]
    assert names == high + low


def test_erpnext_list_between_dates_covers_whole_last_day(api: httpx.Client) -> None:
    create(api, "ToDo", {"description": "today"})
    today = time.strftime("%Y-%m-%d")
    names = list_names(api, "ToDo", filters=[["creation", "between", [today, today]]])
    assert len(names) == 1


@pytest.mark.parametrize(
    "params",
    [{"filters": "[[priority"}, {"fields": "name"}, {"or_filters": "{"}],
)
def test_erpnext_list_bad_json_param_is_417(
    api: httpx.Client, params: dict[str, str]
) -> None:
    response = api.get("/api/resource/ToDo", params=params)
    assert response.status_code == 417
    assert response.json()["exc_type"] == "ValidationError"
    assert "Invalid JSON" in messages(response.json())[0]["message"]


def test_erpnext_list_unknown_operator_is_417(api: httpx.Client) -> None:
    params = {"filters": '[["name", "~", "x"]]'}
    response = api.get("/api/resource/ToDo", params=params)
    assert response.status_code == 417


def test_erpnext_get_count_applies_filters(api: httpx.Client, todos: list[str]) -> None:
    params = {"doctype": "ToDo", "filters": '{"priority": "High"}'}
    response = api.get("/api/method/frappe.client.get_count", params=params)
    assert response.json() == {"message": 22}
    response = api.get("/api/method/frappe.client.get_count?doctype=ToDo")
    assert response.json() == {"message": 45}


def test_erpnext_logged_user_and_unknown_method(api: httpx.Client) -> None:
    response = api.get("/api/method/frappe.auth.get_logged_user")
    assert response.json() == {"message": "Administrator"}
    missing = api.get("/api/method/frappe.nothing.here")
    assert missing.status_code == 417


# ------------------------------------------------------------------ faults


def test_erpnext_faults_count_down_then_requests_succeed(
    api: httpx.Client, control: httpx.Client
) -> None:
    queued = control.post("/__standin__/faults", json={"count": 2, "status": 503})
    assert queued.status_code == 200
    statuses = [api.get("/api/resource/Company").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    stats = control.get("/__standin__/stats").json()
    assert stats["requests"]["GET /api/resource/Company"] == 3
    assert stats["faults"] == []


def test_erpnext_fault_503_defaults_to_session_stopped(
    api: httpx.Client, control: httpx.Client
) -> None:
    control.post("/__standin__/faults", json={"status": 503})
    body = api.get("/api/resource/Company").json()
    assert body["exc_type"] == "SessionStopped"
    assert messages(body)


def test_erpnext_fault_429_sends_retry_after(
    api: httpx.Client, control: httpx.Client
) -> None:
    fault = {"status": 429, "headers": {"Retry-After": "2"}}
    control.post("/__standin__/faults", json=fault)
    response = api.get("/api/resource/Company")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["exc_type"] == "TooManyRequestsError"
    control.post("/__standin__/faults", json={"status": 429})
    assert api.get("/api/resource/Company").headers["Retry-After"] == "1"


def test_erpnext_fault_match_only_hits_that_endpoint(
    api: httpx.Client, control: httpx.Client, state: ErpnextState
) -> None:
    control.post(
        "/__standin__/faults",
        json={"status": 500, "match": "POST /api/resource/Employee"},
    )
    assert api.get("/api/resource/Employee").status_code == 200
    response = api.post("/api/resource/Employee", json=EMPLOYEE)
    assert response.status_code == 500
    assert state.docs["Employee"] == {}
    assert api.post("/api/resource/Employee", json=EMPLOYEE).status_code == 200


def test_erpnext_fault_with_custom_text_body(
    api: httpx.Client, control: httpx.Client
) -> None:
    control.post("/__standin__/faults", json={"status": 502, "body": "Bad Gateway"})
    response = api.get("/api/resource/Company")
    assert (response.status_code, response.text) == (502, "Bad Gateway")


def test_erpnext_delay_only_fault_adds_latency(
    api: httpx.Client, state: ErpnextState
) -> None:
    state.add_fault(delay=0.3)
    started = time.monotonic()
    assert api.get("/api/resource/Company").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_erpnext_drop_creates_document_but_cuts_connection(
    api: httpx.Client, control: httpx.Client, state: ErpnextState
) -> None:
    control.post("/__standin__/drop", json={"match": "POST /api/resource/Employee"})
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/api/resource/Employee", json=EMPLOYEE)
    assert list(state.docs["Employee"]) == ["HR-EMP-00001"]
    assert api.post("/api/resource/Employee", json=EMPLOYEE).status_code == 200


def test_erpnext_drop_with_status_answers_500_after_creating(
    api: httpx.Client, state: ErpnextState
) -> None:
    state.add_drop(status=500, match="POST /api/resource/ToDo")
    response = api.post("/api/resource/ToDo", json={"description": "maybe"})
    assert response.status_code == 500
    assert response.json()["exc_type"] == "Exception"
    assert len(state.docs["ToDo"]) == 1


def test_erpnext_python_fault_and_counters(
    api: httpx.Client, state: ErpnextState
) -> None:
    state.add_fault(404, count=1, match="GET /api/resource/Company")
    assert api.get("/api/resource/Company").status_code == 404
    assert state.request_counts["GET /api/resource/Company"] == 1


def test_erpnext_reset_clears_docs_counters_and_faults(
    api: httpx.Client, control: httpx.Client
) -> None:
    create(api, "ToDo", {"description": "x"})
    control.post("/__standin__/faults", json={"status": 503, "count": 5})
    control.post("/__standin__/reset")
    stats = control.get("/__standin__/stats").json()
    assert stats["requests"] == {}
    assert stats["faults"] == []
    assert stats["docs"]["ToDo"] == 0
    assert stats["docs"]["Gender"] == 4
    assert create(api, "Employee", EMPLOYEE)["name"] == "HR-EMP-00001"


def test_erpnext_bad_fault_request_is_400(control: httpx.Client) -> None:
    assert control.post("/__standin__/faults", json={"count": 1}).status_code == 400
    assert control.get("/__standin__/docs/Spaceship").status_code == 404


# ------------------------------------------------- purchase-to-payment

YEAR = time.strftime("%Y")
SUPPLIER = "Acme Office Supplies"
ORDER = {
    "supplier": SUPPLIER,
    "company": "Example Corp",
    "schedule_date": "2099-01-31",
    "items": [
        {"item_code": "PAPER-A4", "qty": 10, "rate": 4.5},
        {"item_code": "LAPTOP-14", "qty": "2", "rate": 999.99},
    ],
}


def receipt_for(order: str | None, **extra: Any) -> dict[str, Any]:
    row = {"item_code": "PAPER-A4", "qty": 10, "rate": 4.5}
    if order is not None:
        row["purchase_order"] = order
    return {"supplier": SUPPLIER, "company": "Example Corp", "items": [row], **extra}


def submitted(api: httpx.Client, doctype: str, doc: dict[str, Any]) -> str:
    name = create(api, doctype, doc)["name"]
    response = api.put(f"/api/resource/{doctype}/{name}", json={"docstatus": 1})
    assert response.status_code == 200, response.text
    return name


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """Status, exc_type and the first server message of an error answer."""
    body = response.json()
    return response.status_code, body["exc_type"], messages(body)[0]["message"]


def test_erpnext_seeds_suppliers_items_and_issue_priorities(api: httpx.Client) -> None:
    assert SUPPLIER in list_names(api, "Supplier")
    assert {"PAPER-A4", "LAPTOP-14"} <= set(list_names(api, "Item"))
    priorities = list_names(api, "Issue Priority", order_by="name asc")
    assert priorities == ["High", "Low", "Medium", "Urgent"]


def test_erpnext_supplier_and_item_are_named_by_their_key_field(
    api: httpx.Client,
) -> None:
    supplier = create(api, "Supplier", {"supplier_name": "Initech"})
    item = create(api, "Item", {"item_code": "TONER-9", "item_group": "Consumable"})
    assert (supplier["name"], supplier["supplier_type"]) == ("Initech", "Company")
    assert (item["name"], item["item_name"], item["stock_uom"]) == (
        "TONER-9",
        "TONER-9",
        "Nos",
    )
    again = api.post("/api/resource/Supplier", json={"supplier_name": "Initech"})
    assert again.status_code == 409


def test_erpnext_purchase_order_rows_are_numbered_named_and_totalled(
    api: httpx.Client,
) -> None:
    order = create(api, "Purchase Order", ORDER)
    assert order["name"] == f"PUR-ORD-{YEAR}-00001"
    assert order["docstatus"] == 0
    first, second = order["items"]
    assert [first["idx"], second["idx"]] == [1, 2]
    assert first["doctype"] == "Purchase Order Item"
    assert (first["parent"], first["parentfield"]) == (order["name"], "items")
    assert first["name"] != second["name"] and len(first["name"]) == 10
    # Quantities are stored as numbers, item name and unit are fetched.
    assert (second["qty"], second["amount"]) == (2.0, 1999.98)
    assert (first["item_name"], first["uom"]) == ("A4 copy paper, 500 sheets", "Box")
    assert first["schedule_date"] == "2099-01-31"
    assert order["grand_total"] == 2044.98
    assert order["transaction_date"] == time.strftime("%Y-%m-%d")


def test_erpnext_row_nulls_are_dropped_on_get(api: httpx.Client) -> None:
    name = create(api, "Purchase Receipt", receipt_for(None))["name"]
    row = api.get(f"/api/resource/Purchase Receipt/{name}").json()["data"]["items"][0]
    assert "purchase_order" not in row
    assert row["item_code"] == "PAPER-A4"


def test_erpnext_purchase_order_mandatory_errors_name_fields_and_rows(
    api: httpx.Client, state: ErpnextState
) -> None:
    response = api.post(
        "/api/resource/Purchase Order", json={"items": [{"item_code": "PAPER-A4"}]}
    )
    assert response.status_code == 417
    body = response.json()
    assert body["exc_type"] == "MandatoryError"
    assert [m["message"] for m in messages(body)] == [
        "Error: Value missing for Purchase Order: Supplier",
        "Error: Value missing for Purchase Order: Company",
        "Error: <strong>Purchase Order Item</strong> Row #1: "
        "Value missing for: Quantity",
        "Error: <strong>Purchase Order Item</strong> Row #1: "
        "Value missing for: Required By",
    ]
    empty = api.post("/api/resource/Purchase Order", json={**ORDER, "items": []})
    assert messages(empty.json())[0]["message"] == (
        "Error: Data missing in table: Items"
    )
    assert state.docs["Purchase Order"] == {}


@pytest.mark.parametrize(
    ("doctype", "doc", "expected"),
    [
        # a Link on the document itself
        (
            "Purchase Order",
            {**ORDER, "supplier": "Nobody Ltd"},
            "Could not find Supplier: Nobody Ltd",
        ),
        # a Link in a child table row
        (
            "Purchase Order",
            {**ORDER, "items": [{"item_code": "NOPE", "qty": 1}]},
            "Could not find Row #1: Item Code: NOPE",
        ),
        # a Dynamic Link whose target doc type comes from another field
        (
            "Payment Entry",
            {
                "payment_type": "Pay",
                "party_type": "Supplier",
                "party": "Nobody Ltd",
                "company": "Example Corp",
                "paid_amount": 5,
            },
            "Could not find Party: Nobody Ltd",
        ),
        (
            "Issue",
            {"subject": "Desk", "priority": "Whenever"},
            "Could not find Priority: Whenever",
        ),
    ],
)
def test_erpnext_bad_links_are_link_validation_errors(
    api: httpx.Client, doctype: str, doc: dict[str, Any], expected: str
) -> None:
    response = api.post(f"/api/resource/{doctype}", json=doc)
    assert error_of(response) == (417, "LinkValidationError", expected)


@pytest.mark.parametrize(
    ("doctype", "doc", "label"),
    [
        ("Supplier", {"supplier_name": "X", "supplier_type": "Alien"}, "Supplier Type"),
        ("Issue", {"subject": "Desk", "status": "Pending"}, "Status"),
        (
            "Payment Entry",
            {"payment_type": "Refund", "company": "Example Corp", "paid_amount": 5},
            "Payment Type",
        ),
    ],
)
def test_erpnext_bad_select_values_are_validation_errors(
    api: httpx.Client, doc: dict[str, Any], doctype: str, label: str
) -> None:
    status, exc_type, message = error_of(api.post(f"/api/resource/{doctype}", json=doc))
    assert (status, exc_type) == (417, "ValidationError")
    assert message.startswith(f"{label} cannot be ")
    assert "It should be one of" in message


def test_erpnext_zero_quantity_is_invalid_qty_error(api: httpx.Client) -> None:
    doc = {**ORDER, "items": [{"item_code": "PAPER-A4", "qty": "none"}]}
    status, exc_type, message = error_of(
        api.post("/api/resource/Purchase Order", json=doc)
    )
    assert (status, exc_type) == (417, "InvalidQtyError")
    assert (
        message == "Row #1: Quantity for Item <strong>PAPER-A4</strong> cannot be zero."
    )


def test_erpnext_required_by_before_order_date_is_refused(api: httpx.Client) -> None:
    doc = {**ORDER, "transaction_date": "2030-05-02", "schedule_date": "2030-05-01"}
    response = api.post("/api/resource/Purchase Order", json=doc)
    assert error_of(response)[2] == (
        "Row #1: Reqd by Date cannot be before Transaction Date"
    )


def test_erpnext_put_docstatus_1_submits_document_and_rows(
    api: httpx.Client, state: ErpnextState
) -> None:
    name = create(api, "Purchase Order", ORDER)["name"]
    response = api.put(f"/api/resource/Purchase Order/{name}", json={"docstatus": 1})
    assert response.status_code == 200
    stored = state.docs["Purchase Order"][name]
    assert stored["docstatus"] == 1
    assert [row["docstatus"] for row in stored["items"]] == [1, 1]


def test_erpnext_create_with_docstatus_1_submits_at_once(api: httpx.Client) -> None:
    assert create(api, "Purchase Order", {**ORDER, "docstatus": 1})["docstatus"] == 1
    refused = api.post("/api/resource/Purchase Order", json={**ORDER, "docstatus": 2})
    assert error_of(refused)[:2] == (417, "DocstatusTransitionError")


def test_erpnext_submitted_document_refuses_edits(
    api: httpx.Client, state: ErpnextState
) -> None:
    name = submitted(api, "Purchase Order", ORDER)
    path = f"/api/resource/Purchase Order/{name}"
    response = api.put(path, json={"supplier": "Northwind Hardware"})
    assert error_of(response) == (
        417,
        "UpdateAfterSubmitError",
        "Not allowed to change <strong>Supplier</strong> after submission from "
        f"<strong>{SUPPLIER}</strong> to <strong>Northwind Hardware</strong>",
    )
    rows = state.docs["Purchase Order"][name]["items"]
    changed_row = [{"name": rows[0]["name"], "qty": 11}, {"name": rows[1]["name"]}]
    response = api.put(path, json={"items": changed_row})
    assert error_of(response)[2].startswith(
        "Row #1: Not allowed to change <strong>Quantity"
    )
    response = api.put(path, json={"items": changed_row[:1]})
    assert error_of(response)[1] == "UpdateAfterSubmitError"
    assert state.docs["Purchase Order"][name]["supplier"] == SUPPLIER


def test_erpnext_submit_of_submitted_document_changes_nothing(
    api: httpx.Client, state: ErpnextState
) -> None:
    # Frappe takes it as an update after submit with no change, not an error.
    name = submitted(api, "Purchase Order", ORDER)
    before = state.get("Purchase Order", name)
    response = api.put(f"/api/resource/Purchase Order/{name}", json={"docstatus": 1})
    assert response.status_code == 200
    assert unstamped(state.get("Purchase Order", name)) == unstamped(before)


def unstamped(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without its modified stamps, rows included."""
    rows = [{**row, "modified": None} for row in doc["items"]]
    return {**doc, "modified": None, "items": rows}


@pytest.mark.parametrize(
    ("how", "body"),
    [
        ("put", {"docstatus": 2}),
        ("method", None),
    ],
)
def test_erpnext_cancel_by_put_or_frappe_client_cancel(
    api: httpx.Client, state: ErpnextState, how: str, body: Any
) -> None:
    name = submitted(api, "Purchase Order", ORDER)
    if how == "put":
        response = api.put(f"/api/resource/Purchase Order/{name}", json=body)
        doc = response.json()["data"]
    else:
        args = {"doctype": "Purchase Order", "name": name}
        response = api.post("/api/method/frappe.client.cancel", json=args)
        doc = response.json()["message"]
    assert (response.status_code, doc["docstatus"]) == (200, 2)
    assert state.docs["Purchase Order"][name]["docstatus"] == 2


@pytest.mark.parametrize(
    ("start", "sent", "expected"),
    [
        # cancelling a draft
        (
            0,
            {"docstatus": 2},
            (
                "DocstatusTransitionError",
                "Cannot change docstatus from 0 (Draft) to 2 (Cancelled)",
            ),
        ),
        # back from submitted to draft
        (
            1,
            {"docstatus": 0},
            (
                "DocstatusTransitionError",
                "Cannot change docstatus from 1 (Submitted) to 0 (Draft)",
            ),
        ),
        # submitting, cancelling again or editing a cancelled document
        (2, {"docstatus": 1}, ("ValidationError", "Cannot edit cancelled document")),
        (2, {"docstatus": 2}, ("ValidationError", "Cannot edit cancelled document")),
        (2, {"bill_no": "X"}, ("ValidationError", "Cannot edit cancelled document")),
    ],
)
def test_erpnext_refused_docstatus_transitions(
    api: httpx.Client, start: int, sent: dict[str, Any], expected: tuple[str, str]
) -> None:
    name = create(api, "Purchase Invoice", receipt_for(None))["name"]
    path = f"/api/resource/Purchase Invoice/{name}"
    for status in range(1, start + 1):
        assert api.put(path, json={"docstatus": status}).status_code == 200
    status, exc_type, message = error_of(api.put(path, json=sent))
    assert (status, exc_type, message) == (417, *expected)


def test_erpnext_frappe_client_cancel_errors_and_methods(api: httpx.Client) -> None:
    todo = create(api, "ToDo", {"description": "not submittable"})["name"]
    args = {"doctype": "ToDo", "name": todo}
    response = api.post("/api/method/frappe.client.cancel", json=args)
    assert error_of(response)[1] == "DocstatusTransitionError"
    missing = {"doctype": "Purchase Order", "name": "PUR-ORD-1999-00001"}
    assert api.post("/api/method/frappe.client.cancel", json=missing).status_code == 404
    assert api.get("/api/method/frappe.client.cancel", params=args).status_code == 403


def test_erpnext_cancel_is_refused_while_a_submitted_doc_links_to_it(
    api: httpx.Client,
) -> None:
    order = submitted(api, "Purchase Order", ORDER)
    receipt = submitted(api, "Purchase Receipt", receipt_for(order))
    response = api.put(f"/api/resource/Purchase Order/{order}", json={"docstatus": 2})
    assert error_of(response) == (
        417,
        "LinkExistsError",
        f"Cannot delete or cancel because Purchase Order <strong>{order}</strong> "
        f"is linked with Purchase Receipt <strong>{receipt}</strong> at Row: 1",
    )
    # Once the receipt is cancelled, the order can be cancelled too.
    api.put(f"/api/resource/Purchase Receipt/{receipt}", json={"docstatus": 2})
    response = api.put(f"/api/resource/Purchase Order/{order}", json={"docstatus": 2})
    assert response.status_code == 200


def test_erpnext_new_document_cannot_link_a_cancelled_one(api: httpx.Client) -> None:
    order = submitted(api, "Purchase Order", ORDER)
    api.put(f"/api/resource/Purchase Order/{order}", json={"docstatus": 2})
    response = api.post("/api/resource/Purchase Receipt", json=receipt_for(order))
    assert error_of(response) == (
        417,
        "CancelledLinkError",
        f"Cannot link cancelled document: Row #1: Purchase Order: {order}",
    )


def test_erpnext_delete_of_submitted_document_is_refused(
    api: httpx.Client, state: ErpnextState
) -> None:
    name = submitted(api, "Purchase Order", ORDER)
    response = api.delete(f"/api/resource/Purchase Order/{name}")
    assert error_of(response) == (
        417,
        "ValidationError",
        f"Purchase Order {name}: Submitted Record cannot be deleted. "
        "You must Cancel it first.",
    )
    api.put(f"/api/resource/Purchase Order/{name}", json={"docstatus": 2})
    assert api.delete(f"/api/resource/Purchase Order/{name}").status_code == 202
    assert state.docs["Purchase Order"] == {}


def test_erpnext_delete_is_held_back_by_live_links_only(api: httpx.Client) -> None:
    order = submitted(api, "Purchase Order", ORDER)
    receipt = create(api, "Purchase Receipt", receipt_for(order))["name"]
    api.put(f"/api/resource/Purchase Order/{order}", json={"docstatus": 2})
    response = api.delete(f"/api/resource/Purchase Order/{order}")
    assert error_of(response)[1] == "LinkExistsError"
    assert receipt in error_of(response)[2]
    api.delete(f"/api/resource/Purchase Receipt/{receipt}")
    assert api.delete(f"/api/resource/Purchase Order/{order}").status_code == 202


def test_erpnext_put_of_a_table_replaces_rows_keeping_named_ones(
    api: httpx.Client,
) -> None:
    order = create(api, "Purchase Order", ORDER)
    kept = order["items"][1]
    rows = [
        {"name": kept["name"], "qty": 3},
        {"item_code": "DESK-CHAIR", "qty": 1, "rate": 150},
    ]
    response = api.put(
        f"/api/resource/Purchase Order/{order['name']}", json={"items": rows}
    )
    items = response.json()["data"]["items"]
    assert [(r["idx"], r["item_code"], r["qty"]) for r in items] == [
        (1, "LAPTOP-14", 3.0),
        (2, "DESK-CHAIR", 1.0),
    ]
    assert items[0]["name"] == kept["name"]
    assert items[1]["name"] not in {row["name"] for row in order["items"]}
    assert response.json()["data"]["grand_total"] == 3149.97


def test_erpnext_list_filters_on_child_table_rows_and_star_skips_tables(
    api: httpx.Client,
) -> None:
    first = submitted(api, "Purchase Order", ORDER)
    second = submitted(api, "Purchase Order", ORDER)
    receipt = create(api, "Purchase Receipt", receipt_for(first))["name"]
    create(api, "Purchase Receipt", receipt_for(second))
    found = list_names(
        api,
        "Purchase Receipt",
        filters=[["Purchase Receipt Item", "purchase_order", "=", first]],
    )
    assert found == [receipt]
    response = api.get("/api/resource/Purchase Order", params={"fields": '["*"]'})
    rows = response.json()["data"]
    assert len(rows) == 2 and "items" not in rows[0]
    assert rows[0]["grand_total"] == 2044.98


def test_erpnext_payment_entry_allocates_against_a_submitted_order(
    api: httpx.Client,
) -> None:
    order = submitted(api, "Purchase Order", ORDER)
    payment = create(
        api,
        "Payment Entry",
        {
            "payment_type": "Pay",
            "party_type": "Supplier",
            "party": SUPPLIER,
            "company": "Example Corp",
            "paid_amount": 2044.98,
            "reference_no": "TRX-1",
            "reference_date": "2030-01-02",
            "references": [
                {
                    "reference_doctype": "Purchase Order",
                    "reference_name": order,
                    "allocated_amount": 2000,
                }
            ],
        },
    )
    assert payment["name"] == f"ACC-PAY-{YEAR}-00001"
    assert payment["references"][0]["doctype"] == "Payment Entry Reference"
    assert (payment["total_allocated_amount"], payment["unallocated_amount"]) == (
        2000.0,
        44.98,
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Pay needs a party
        (
            {"party_type": None, "party": None},
            "Error: Value missing for Payment Entry: Party Type",
        ),
        ({"paid_amount": 0}, "Paid Amount is mandatory"),
        ({"reference": ("Purchase Order", "draft")}, "must be submitted"),
        (
            {"party": "Northwind Hardware"},
            "is not associated with Supplier Northwind Hardware",
        ),
        (
            {"reference": ("Purchase Receipt", "submitted")},
            "Reference Doctype must be one of",
        ),
    ],
)
def test_erpnext_payment_entry_checks(
    api: httpx.Client, change: dict[str, Any], expected: str
) -> None:
    order = submitted(api, "Purchase Order", ORDER)
    reference = {"reference_doctype": "Purchase Order", "reference_name": order}
    if "reference" in change:
        doctype, kind = change.pop("reference")
        doc = ORDER if doctype == "Purchase Order" else receipt_for(order)
        name = (
            create(api, doctype, doc)["name"]
            if kind == "draft"
            else submitted(api, doctype, doc)
        )
        reference = {"reference_doctype": doctype, "reference_name": name}
    payment = {
        "payment_type": "Pay",
        "party_type": "Supplier",
        "party": SUPPLIER,
        "company": "Example Corp",
        "paid_amount": 10,
        "references": [reference],
        **change,
    }
    status, _, message = error_of(api.post("/api/resource/Payment Entry", json=payment))
    assert status == 417
    assert expected in message


# ------------------------------------------------------------------ support


def test_erpnext_issue_defaults_and_validation(api: httpx.Client) -> None:
    issue = create(
        api,
        "Issue",
        {
            "subject": "Badge reader broken",
            "raised_by": "ada@example.com",
            "priority": "Urgent",
        },
    )
    assert issue["name"] == f"ISS-{YEAR}-00001"
    assert (issue["status"], issue["priority"]) == ("Open", "Urgent")
    assert issue["opening_date"] == time.strftime("%Y-%m-%d")
    missing = api.post("/api/resource/Issue", json={"raised_by": "ada@example.com"})
    assert error_of(missing)[1:] == (
        "MandatoryError",
        "Error: Value missing for Issue: Subject",
    )
    bad_email = api.post(
        "/api/resource/Issue", json={"subject": "x", "raised_by": "ada"}
    )
    assert error_of(bad_email)[1] == "InvalidEmailAddressError"
    closed = api.put(f"/api/resource/Issue/{issue['name']}", json={"status": "Closed"})
    assert closed.json()["data"]["status"] == "Closed"


def test_erpnext_issue_priority_takes_the_name_sent(api: httpx.Client) -> None:
    assert create(api, "Issue Priority", {"name": "Critical"})["name"] == "Critical"
    response = api.post("/api/resource/Issue Priority", json={"description": "x"})
    assert error_of(response) == (417, "ValidationError", "Name not set via prompt")
