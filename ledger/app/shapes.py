"""The JSON shape of every command's output, each named by its ``schema`` field.

A command's ``--json`` prints one object, or a list of objects, of one shape; each object
carries ``"schema": "ckpt-ledger/NAME/1"``. :data:`SHAPES` maps NAME to the model (or
``TypedDict``) that defines it and :func:`json_schema` gives its JSON Schema, published as
``ledger/schemas/NAME.schema.json`` (``python -m ledger.app.shapes DIR`` writes them; a test
checks that the published files are these and that the CLI's real output matches them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from ledger.app.info import Info
from ledger.app.json_types import (
    ChainReportJSON,
    CopyJSON,
    ExportJSON,
    HeadJSON,
    ImportLogJSON,
    MockCheckpointsJSON,
    MockExtentsJSON,
    RebuildJSON,
)
from ledger.app.views import (
    BackupView,
    BitmapsView,
    CheckpointView,
    DeleteResult,
    EventView,
    HistoryEntry,
    ImportReport,
    PlanView,
    ReplayReport,
    VerifyReport,
)
from ledger.domain.events import EPOCH_FIELDS, EVENT_TYPES
from ledger.domain.model import HostJob

SHAPES: dict[str, Any] = {
    "event": EventView,
    "checkpoint": CheckpointView,
    "bitmaps": BitmapsView,
    "plan": PlanView,
    "delete": DeleteResult,
    "history-entry": HistoryEntry,
    "backup": BackupView,
    "import": ImportReport,
    "replay": ReplayReport,
    "verify": VerifyReport,
    "info": Info,
    "verify-log": ChainReportJSON,
    "head": HeadJSON,
    "export": ExportJSON,
    "import-log": ImportLogJSON,
    "copy": CopyJSON,
    "rebuild": RebuildJSON,
    "mock-job": HostJob,
    "mock-extents": MockExtentsJSON,
    "mock-checkpoints": MockCheckpointsJSON,
}
"""Shape name -> the pydantic model or ``TypedDict`` that defines it."""


def schema_id(name: str) -> str:
    """The ``schema`` field of shape ``name``: ``ckpt-ledger/NAME/1``."""
    if name not in SHAPES:
        raise KeyError(f"no output shape {name!r}")
    return f"ckpt-ledger/{name}/1"


def tagged(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """``obj`` with its ``schema`` field first."""
    return {"schema": schema_id(name), **{k: v for k, v in obj.items() if k != "schema"}}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of shape ``name``, as published."""
    model = SHAPES[name]
    if isinstance(model, type) and issubclass(model, BaseModel):
        body = model.model_json_schema(mode="serialization", by_alias=True)
    else:
        body = TypeAdapter(model).json_schema(mode="serialization")
    props = body.setdefault("properties", {})
    props.pop("schema", None)
    body["properties"] = {"schema": {"const": schema_id(name)}, **props}
    body["required"] = ["schema", *[r for r in body.get("required", []) if r != "schema"]]
    body.setdefault("additionalProperties", False)
    if name == "event":
        _event_data(body)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://github.com/ckpt-ledger/ckpt-ledger/ledger/schemas/{name}.schema.json",
        **body,
    }


def _event_data(body: dict[str, Any]) -> None:
    """Each event type's ``data``: its model's fields but ``type``, times as ISO 8601."""
    defs = body.setdefault("$defs", {})
    body["properties"]["type"] = {"enum": list(EVENT_TYPES)}
    rules = []
    for tag, cls in EVENT_TYPES.items():
        data = cls.model_json_schema(mode="serialization")
        defs.update(data.pop("$defs", {}))
        data["properties"].pop("type")
        data["required"] = [r for r in data.get("required", []) if r != "type"]
        for field in EPOCH_FIELDS.get(tag, ()):
            prop = data["properties"][field]
            iso = {"type": "string", "format": "date-time"}
            if "anyOf" in prop:
                prop["anyOf"] = [iso if p.get("type") == "number" else p for p in prop["anyOf"]]
            else:
                prop.pop("type", None)
                prop.update(iso)
        data["additionalProperties"] = False
        defs[f"{tag}Data"] = data
        rules.append({"if": {"properties": {"type": {"const": tag}}},
                      "then": {"properties": {"data": {"$ref": f"#/$defs/{tag}Data"}}}})
    body["allOf"] = rules
    body["properties"]["record"] = {
        "description": "in export files only: the stored record beyond this shape "
                       "(ledger/app/integrity.py)",
        "type": "object",
        "required": ["schema_version", "recorded_at", "hash", "prev_hash"],
        "additionalProperties": False,
        "properties": {
            "schema_version": {"type": "integer", "minimum": 1},
            "recorded_at": {"type": "number", "description": "the stored time, exactly"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "payload_b64": {"type": "string", "description": "the stored payload, when the "
                            "shape does not give it back"},
        },
    }


def write_all(folder: Path) -> list[Path]:
    """Write every shape's JSON Schema into ``folder`` (``NAME.schema.json``)."""
    out = []
    for name in SHAPES:
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n")
        out.append(path)
    return out


if __name__ == "__main__":  # python -m ledger.app.shapes ledger/schemas
    for p in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "ledger/schemas")):
        print(p)
