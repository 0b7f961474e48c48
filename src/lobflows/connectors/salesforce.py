"""Salesforce through its REST API: SOQL, record writes and collections.

Auth is the OAuth2 client-credentials flow against the org's My Domain token
endpoint. Salesforce sends no ``expires_in`` (the token lives as long as the
org's session timeout), so the token is kept until a call answers 401
``INVALID_SESSION_ID``, then fetched again once. Errors come as a JSON array
of ``{"errorCode", "message", "fields"}``; the first entry names the error.
See the Salesforce section of the connector contracts.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import pydantic

from lobflows import errors
from lobflows.connectors import _http, _oauth, base

# Transient by nature: a row lock held by another transaction, the org's
# request allowance (the contract advises alerting on the 24-hour one; the
# retry policy's ceiling bounds how long we keep trying), an outage.
RETRYABLE_CODES = frozenset(
    {"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"}
)
MAX_COLLECTION_RECORDS = 200


class SalesforceSettings(base.NetworkSettings):
    instance_url: pydantic.HttpUrl = pydantic.Field(
        description="e.g. https://example.my.salesforce.com"
    )
    api_version: str = pydantic.Field(
        default="v60.0", pattern=r"^v\d+\.\d+$", description="REST API version."
    )
    token_url: pydantic.HttpUrl = pydantic.Field(
        description="The My Domain token endpoint, .../services/oauth2/token."
    )
    client_id: str = pydantic.Field(min_length=1, description="Consumer key.")
    secret: str = pydantic.Field(
        description="Name of the secret holding the consumer secret."
    )


class _Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class QueryParams(_Params):
    soql: str = pydantic.Field(min_length=1)
    max_records: int = pydantic.Field(
        default=10_000, ge=1, description="Fail rather than read more than this."
    )


class CreateParams(_Params):
    sobject: str = pydantic.Field(min_length=1, pattern=r"^\w+$")
    fields: dict[str, Any]


class UpdateParams(CreateParams):
    id: str = pydantic.Field(min_length=15, max_length=18, pattern=r"^\w+$")


class UpsertParams(CreateParams):
    external_id_field: str = pydantic.Field(min_length=1, pattern=r"^\w+$")
    external_id: str = pydantic.Field(min_length=1)


class CollectionRecord(_Params):
    sobject: str = pydantic.Field(min_length=1, pattern=r"^\w+$")
    fields: dict[str, Any]


class CompositeParams(_Params):
    records: list[CollectionRecord] = pydantic.Field(
        min_length=1, max_length=MAX_COLLECTION_RECORDS
    )
    all_or_none: bool = True


class SalesforceConnector(base.Connector):
    """Queries and writes Salesforce records."""

    kind = "salesforce"
    settings_model = SalesforceSettings
    actions = {
        "query": "Run a SOQL query and read every batch; returns records and total_size.",
        "create": "Create a record; returns its id.",
        "update": "Change some fields of a record.",
        "upsert": "Create or update a record by an external-ID field; returns id and created.",
        "composite": "Create up to 200 records in one call (sObject Collections); "
        "with all_or_none, one bad record rolls back all.",
    }

    def __init__(self, name: str, settings: SalesforceSettings, secrets: Any) -> None:
        super().__init__(name, settings, secrets)
        self._data_path = f"/services/data/{settings.api_version}"
        self.client = _http.GuardedClient(
            connection=name,
            base_url=str(settings.instance_url).rstrip("/"),
            headers={"Accept": "application/json"},
            timeout_seconds=settings.timeout_seconds,
            allow_networks=settings.allow_networks,
        )
        # Salesforce gives no expires_in: a token is kept until refused.
        self.credentials = _oauth.ClientCredentials(
            self.client,
            secrets,
            connection=name,
            issuer="the Salesforce token endpoint",
            token_url=str(settings.token_url),
            client_id=settings.client_id,
            secret=settings.secret,
        )

    async def action_query(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: QueryParams = base.parse_params(
            QueryParams, params, action=f"{self.name}.query"
        )
        records: list[Any] = []
        url = f"{self._data_path}/query"
        query: dict[str, str] | None = {"q": p.soql}
        while True:
            body = await self._json("GET", url, context, "query", params=query)
            records.extend(body.get("records") or [])
            if len(records) > p.max_records:
                raise errors.ConnectorError(
                    f"{self.name}: the query returns more than max_records "
                    f"({p.max_records}) records; narrow it or raise max_records",
                    retryable=False,
                    connection=self.name,
                )
            following = body.get("nextRecordsUrl")
            if body.get("done", True) or not following:
                return {"records": records, "total_size": body.get("totalSize")}
            url, query = self._within_data_path(str(following)), None

    async def action_create(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CreateParams = base.parse_params(
            CreateParams, params, action=f"{self.name}.create"
        )
        path = f"{self._data_path}/sobjects/{p.sobject}/"
        body = await self._json(
            "POST", path, context, f"create {p.sobject}", json=p.fields
        )
        return {"id": body["id"]}

    async def action_update(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UpdateParams = base.parse_params(
            UpdateParams, params, action=f"{self.name}.update"
        )
        path = f"{self._data_path}/sobjects/{p.sobject}/{p.id}"
        await self._json(
            "PATCH", path, context, f"update {p.sobject} {p.id}", json=p.fields
        )
        return {"id": p.id}

    async def action_upsert(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: UpsertParams = base.parse_params(
            UpsertParams, params, action=f"{self.name}.upsert"
        )
        value = urllib.parse.quote(p.external_id, safe="")
        path = f"{self._data_path}/sobjects/{p.sobject}/{p.external_id_field}/{value}"
        what = f"upsert {p.sobject} by {p.external_id_field}"
        body = await self._json("PATCH", path, context, what, json=p.fields)
        # API versions before 46 answered an update with 204 and no body.
        if not isinstance(body, dict):
            return {"id": None, "created": False}
        return {"id": body.get("id"), "created": bool(body.get("created"))}

    async def action_composite(
        self, params: dict[str, Any], context: base.CallContext
    ) -> Any:
        p: CompositeParams = base.parse_params(
            CompositeParams, params, action=f"{self.name}.composite"
        )
        payload = {
            "allOrNone": p.all_or_none,
            "records": [
                {"attributes": {"type": r.sobject}, **r.fields} for r in p.records
            ],
        }
        path = f"{self._data_path}/composite/sobjects"
        results = await self._json(
            "POST", path, context, "composite create", json=payload
        )
        failed = [r for r in results if not r.get("success")]
        if p.all_or_none and failed:
            raise self._collection_error(results)
        return {"results": results, "failed": len(failed)}

    async def check(self) -> str:
        """A fresh token, then ``GET /limits``: the org's daily API allowance."""
        context = base.check_context(self.settings.timeout_seconds)
        await self.credentials.token(fresh=True)
        path = f"{self._data_path}/limits"
        body = await self._json("GET", path, context, "check (limits)")
        daily = body.get("DailyApiRequests") if isinstance(body, dict) else None
        if not isinstance(daily, dict):
            return f"token obtained; {path} answered"
        left, most = daily.get("Remaining"), daily.get("Max")
        return f"token obtained; {left} of {most} daily API requests left"

    def _collection_error(self, results: list[dict[str, Any]]) -> errors.ConnectorError:
        """The error of a rolled-back collection: the first record that failed on its own."""
        for index, result in enumerate(results):
            for entry in result.get("errors") or []:
                code = entry.get("statusCode")
                if code == "ALL_OR_NONE_OPERATION_ROLLED_BACK":
                    continue
                message = entry.get("message")
                return errors.ConnectorError(
                    f"{self.name}: composite create rolled back: record {index} "
                    f"failed with {code}: {message}",
                    retryable=code in RETRYABLE_CODES,
                    connection=self.name,
                    error_code=code,
                    record_index=index,
                    results=results,
                )
        return errors.ConnectorError(
            f"{self.name}: composite create rolled back",
            retryable=False,
            connection=self.name,
            results=results,
        )

    def _within_data_path(self, link: str) -> str:
        """A ``nextRecordsUrl``, refused unless it is a path under the data API."""
        parsed = urllib.parse.urlsplit(link)
        path = urllib.parse.unquote(parsed.path)
        escapes = ".." in path.split("/")
        if (
            parsed.scheme
            or parsed.netloc
            or escapes
            or not path.startswith(self._data_path.rsplit("/", 1)[0] + "/")
        ):
            raise errors.ConnectorError(
                f"{self.name}: the next batch points outside the instance; refused",
                retryable=False,
                connection=self.name,
            )
        return link

    async def _json(
        self,
        method: str,
        url: str,
        context: base.CallContext,
        what: str,
        **kwargs: Any,
    ) -> Any:
        """One call with the session token; a 401 INVALID_SESSION_ID re-authenticates once."""
        for fresh_token in (False, True):
            headers = {
                "Authorization": f"Bearer {await self.credentials.token(fresh=fresh_token)}"
            }
            response = await self.client.request(
                method,
                url,
                headers=headers,
                timeout_seconds=context.timeout_seconds,
                **kwargs,
            )
            if response.status_code != 401 or fresh_token:
                break
        if response.is_error or response.status_code == 300:
            raise self._error(response, what)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _error(self, response: httpx.Response, what: str) -> errors.RemoteStatusError:
        body = _http.response_body(response)
        first = body[0] if isinstance(body, list) and body else {}
        first = first if isinstance(first, dict) else {}
        code = first.get("errorCode")
        detail = first.get("message") or str(body)[:300] or response.reason_phrase
        kind = f" {code}" if code else ""
        message = (
            f"Salesforce {what} failed with {response.status_code}{kind}: {detail}"
        )
        error = _http.status_error(message, response, connection=self.name)
        if code in RETRYABLE_CODES:
            error.retryable = True
        error.context.update(error_code=code, fields=first.get("fields"), errors=body)
        return error

    async def close(self) -> None:
        await self.client.close()
