"""Steps that shape data: named mappings, schema validation, conditions, events."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from lobflows import errors
from lobflows.engine import events
from lobflows.engine.state import Pass
from lobflows.spec import models
from lobflows.spec.mappings import SENSITIVE
from lobflows.transform import templates, validation
from lobflows.transform.mapper import Mapper, RecordRejected, map_records

log = logging.getLogger(__name__)


class DataSteps:
    """Mapping, validation, condition and emit steps of the engine. A part of
    `Engine`, which provides the store, the journal and the failure handling
    its methods use."""

    def mapper(self, name: str) -> Mapper:
        """The compiled mapping `name` of the project, built once."""
        found = self._mappers.get(name)
        if found is None:
            loaded = self.project.mappings.get(name)
            if loaded is None:
                known = ", ".join(sorted(self.project.mappings)) or "none"
                raise errors.StepInputError(
                    f"no mapping named {name!r}; mappings: {known}"
                )
            found = self._mappers[name] = Mapper(loaded, self.project.mappings)
        return found

    async def _transform(self, state: Pass, step: models.TransformStep) -> Any:
        output, mapped = self._map(state, step)
        for record in mapped if step.transform.enrich else []:
            await self._enrich(state, step, record)
        return output

    async def _enrich(
        self, state: Pass, step: models.TransformStep, record: dict[str, Any]
    ) -> None:
        """Add each enrich field to a mapped record, asking the connector once
        per distinct question within the cache time."""
        for enrich in step.transform.enrich:
            context = {**state.context, "record": record}
            params = self._render(step, enrich.with_, context)
            key = (enrich.call, orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
            cached = self._enrich_cache.get(key)
            now = self.clock.now()
            if cached is not None and cached[0] > now:
                result = cached[1]
            else:
                call = models.CallStep(id=step.id, call=enrich.call, with_=enrich.with_)
                question = hashlib.sha256(key[1]).hexdigest()[:12]
                attempt = state.failures.get(step.id, 0) + 1
                result = await self._call(
                    state, call, params, attempt, key=f"{step.id}-enrich-{question}"
                )
                if enrich.cache_seconds > 0:
                    self._enrich_cache[key] = (now + enrich.cache_seconds, result)
            record[enrich.field] = self._render(
                step, enrich.value, {**context, "result": result}
            )

    def _map(
        self, state: Pass, step: models.TransformStep
    ) -> tuple[Any, list[dict[str, Any]]]:
        """The step's output, and the mapped records in it."""
        spec = step.transform
        data = self._render(step, spec.input, state.context)
        try:
            mapper = self.mapper(spec.mapping)
        except errors.StepInputError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: {exc}", step=step.id
            ) from None
        if not isinstance(data, list):
            try:
                if not mapper.keeps(data):
                    return None, []
                output, trace = mapper.map(data)
            except RecordRejected as exc:
                raise errors.StepInputError(
                    f"step {step.id!r}: mapping {spec.mapping!r}: {exc}", step=step.id
                ) from None
            state.traces[step.id] = trace
            return output, [output]
        result = map_records(mapper, data)
        if result.rejected and spec.on_reject == "fail":
            first = result.rejected[0]
            raise errors.StepInputError(
                f"step {step.id!r}: mapping {spec.mapping!r}: record {first['record']}: "
                f"field {first['field']!r}: {first['reason']}"
                + (
                    f" ({len(result.rejected)} records rejected in all)"
                    if len(result.rejected) > 1
                    else ""
                ),
                step=step.id,
            )
        state.traces[step.id] = result.trace
        output = {
            "records": result.records,
            "rejected": result.rejected,
            "dropped": result.dropped,
        }
        return output, result.records

    def _validate(self, state: Pass, step: models.ValidateStep) -> Any:
        data = self._render(step, step.validate_.data, state.context)
        sensitive = state.flow.card.data.sensitivity in SENSITIVE
        found = validation.problems(data, step.validate_.schema_, sensitive=sensitive)
        if found:
            raise errors.StepInputError(
                f"step {step.id!r}: the data does not match its schema: "
                + "; ".join(found),
                step=step.id,
            )
        return data

    async def _emit(
        self, state: Pass, step: models.EmitStep, data: Any
    ) -> dict[str, Any]:
        # The event id is fixed by run and step: an emit repeated after a
        # crash starts no second run anywhere.
        key = (
            None
            if step.emit.key is None
            else str(self._render(step, step.emit.key, state.context))
        )
        event = events.Event(
            topic=step.emit.topic, data=data, id=f"{state.run.id}:{step.id}", key=key
        )
        started = await events.EventRouter(self).deliver(event)
        self.notify_due()
        return {"topic": event.topic, "event_id": event.id, "runs": started}

    def _condition(self, step: Any, source: str, context: dict[str, Any]) -> bool:
        try:
            return templates.evaluate_condition(source, context)
        except errors.TemplateError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: condition {source!r}: {exc}", step=step.id
            ) from None

    def _value(self, step: Any, source: str, context: dict[str, Any]) -> Any:
        try:
            return templates.compile_condition(source).render(context)
        except errors.TemplateError as exc:
            raise errors.StepInputError(
                f"step {step.id!r}: {exc}", step=step.id
            ) from None
