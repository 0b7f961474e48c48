"""The salesforce connector against the Salesforce stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lobflows import errors
from lobflows.connectors import base, salesforce
from lobflows.secrets import SecretStore
from lobflows.testing.salesforce import SalesforceState, create_salesforce_app
from lobflows.testing.servers import ServerThread

pytestmark = pytest.mark.integration

CLIENT_ID, CLIENT_SECRET = "sf-consumer-key", "sf-consumer-secret-1"
CONTEXT = base.CallContext(
    run_id="r" * 32, flow="crm", step="s", attempt=1, timeout_seconds=5
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_salesforce_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture
def state(server: ServerThread) -> SalesforceState:
    org: SalesforceState = server.app.state.salesforce  # type: ignore[attr-defined]
    org.reset()
    return org


@pytest.fixture
async def sf(
    server: ServerThread, state: SalesforceState
) -> AsyncIterator[salesforce.SalesforceConnector]:
    settings = salesforce.SalesforceSettings.model_validate(
        {
            "instance_url": server.url,
            "api_version": "v60.0",
            "token_url": f"{server.url}/services/oauth2/token",
            "client_id": CLIENT_ID,
            "secret": "salesforce-app",
        }
    )
    connector = salesforce.SalesforceConnector(
        "sf", settings, SecretStore({"salesforce-app": CLIENT_SECRET})
    )
    yield connector
    await connector.close()


async def call(connector: base.Connector, action: str, **params: Any) -> Any:
    return await connector.call(action, params, CONTEXT)


async def failure(
    connector: base.Connector, action: str, **params: Any
) -> errors.RemoteStatusError:
    with pytest.raises(errors.RemoteStatusError) as caught:
        await call(connector, action, **params)
    return caught.value


async def test_salesforce_query_follows_next_records_url_past_the_first_batch(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    for i in range(7):
        state.create("Account", {"Name": f"Acme {i}", "Industry": "Retail"})

    found = await call(sf, "query", soql="SELECT Id, Name FROM Account")

    assert [r["Name"] for r in found["records"]] == [f"Acme {i}" for i in range(7)]
    assert found["total_size"] == 7
    batches = sum(n for k, n in state.requests.items() if k.startswith("GET "))
    assert batches == 3  # batch size 3: 3 + 3 + 1


async def test_salesforce_query_fails_for_good_past_max_records(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    for i in range(5):
        state.create("Account", {"Name": f"Acme {i}"})

    with pytest.raises(errors.ConnectorError) as caught:
        await call(sf, "query", soql="SELECT Id FROM Account", max_records=4)

    assert caught.value.retryable is False
    assert "max_records (4)" in str(caught.value)


async def test_salesforce_create_then_update_changes_the_record(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    created = await call(sf, "create", sobject="Account", fields={"Name": "Acme"})

    await call(
        sf, "update", sobject="Account", id=created["id"], fields={"Phone": "555"}
    )

    assert len(created["id"]) == 18
    assert state.records["Account"][created["id"]]["Phone"] == "555"


async def test_salesforce_upsert_creates_then_updates_by_external_id(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    params = {
        "sobject": "Contact",
        "external_id_field": "External_Id__c",
        "external_id": "run-42",
    }

    first = await call(sf, "upsert", **params, fields={"LastName": "Lovelace"})
    second = await call(sf, "upsert", **params, fields={"Email": "ada@example.com"})

    assert (first["created"], second["created"]) == (True, False)
    assert first["id"] == second["id"]
    record = state.records["Contact"][first["id"]]
    assert (record["LastName"], record["Email"]) == ("Lovelace", "ada@example.com")


async def test_salesforce_composite_all_or_none_rolls_back_on_one_bad_record(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    records = [
        {"sobject": "Account", "fields": {"Name": "Good"}},
        {"sobject": "Account", "fields": {"Phone": "no name"}},
    ]

    with pytest.raises(errors.ConnectorError) as caught:
        await call(sf, "composite", records=records, all_or_none=True)

    assert caught.value.retryable is False
    assert caught.value.context["error_code"] == "REQUIRED_FIELD_MISSING"
    assert caught.value.context["record_index"] == 1
    assert state.records["Account"] == {}


async def test_salesforce_composite_creates_every_record(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    records = [
        {"sobject": "Account", "fields": {"Name": "A"}},
        {"sobject": "Contact", "fields": {"LastName": "B"}},
    ]

    done = await call(sf, "composite", records=records)

    assert done["failed"] == 0
    assert [r["success"] for r in done["results"]] == [True, True]
    assert (len(state.records["Account"]), len(state.records["Contact"])) == (1, 1)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"Phone": "555"}, "REQUIRED_FIELD_MISSING"),  # Name left out
        ({"Name": "A", "Colour__c": "red"}, "INVALID_FIELD"),  # unknown field
    ],
)
async def test_salesforce_validation_error_fails_for_good_with_its_code(
    sf: salesforce.SalesforceConnector, fields: dict[str, Any], code: str
) -> None:
    error = await failure(sf, "create", sobject="Account", fields=fields)

    assert (error.status, error.retryable) == (400, False)
    assert error.context["error_code"] == code
    assert str(error).startswith(f"Salesforce create Account failed with 400 {code}: ")


async def test_salesforce_duplicate_external_id_fails_for_good(
    sf: salesforce.SalesforceConnector,
) -> None:
    fields = {"Name": "A", "External_Id__c": "x-1"}
    await call(sf, "create", sobject="Account", fields=fields)

    error = await failure(sf, "create", sobject="Account", fields=fields)

    assert (error.retryable, error.context["error_code"]) == (False, "DUPLICATE_VALUE")


async def test_salesforce_malformed_query_fails_for_good(
    sf: salesforce.SalesforceConnector,
) -> None:
    error = await failure(sf, "query", soql="SELEKT Id FROM Account")

    assert (error.retryable, error.context["error_code"]) == (False, "MALFORMED_QUERY")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "SERVER_UNAVAILABLE"),  # outage
        (403, "REQUEST_LIMIT_EXCEEDED"),  # org allowance spent
        (400, "UNABLE_TO_LOCK_ROW"),  # row held by another transaction
        (429, "REQUEST_LIMIT_EXCEEDED"),  # concurrency cap
    ],
)
async def test_salesforce_transient_error_is_retryable_with_retry_after(
    sf: salesforce.SalesforceConnector,
    state: SalesforceState,
    status: int,
    code: str,
) -> None:
    body = [{"errorCode": code, "message": "try later"}]
    state.faults.add(status, body=body, headers={"Retry-After": "7"})

    error = await failure(sf, "create", sobject="Account", fields={"Name": "A"})

    assert (error.status, error.retryable) == (status, True)
    assert (error.retry_after_seconds, error.context["error_code"]) == (7.0, code)


async def test_salesforce_expired_session_fetches_a_new_token_once(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    await call(sf, "create", sobject="Account", fields={"Name": "A"})
    state.expire_tokens()

    await call(sf, "create", sobject="Account", fields={"Name": "B"})

    assert state.tokens_issued == 2
    assert len(state.records["Account"]) == 2


async def test_salesforce_session_refused_twice_fails_for_good(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    body = [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}]
    state.faults.add(401, body=body, count=2)

    error = await failure(sf, "create", sobject="Account", fields={"Name": "A"})

    assert (error.status, error.retryable) == (401, False)
    assert state.tokens_issued == 2


async def test_salesforce_next_records_url_off_the_instance_is_refused(
    sf: salesforce.SalesforceConnector, state: SalesforceState
) -> None:
    page = {"done": False, "records": [], "nextRecordsUrl": "https://evil.test/x"}
    state.faults.add(200, body=page, match="GET /services/data/*/query")

    with pytest.raises(errors.ConnectorError, match="outside the instance"):
        await call(sf, "query", soql="SELECT Id FROM Account")
