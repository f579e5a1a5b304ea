"""The published JSON Schemas (ledger/schemas/) hold for what the CLI really prints: one event
shape for ``log --json``, ``log --jsonl`` and ``follow --jsonl``, named by its ``schema``."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from helpers import Host

SCHEMAS = Path(__file__).resolve().parent.parent / "ledger" / "schemas"


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Host:
    """A ledger with most kinds of event: creates, a redefine, deletes, observed checkpoints
    and one gone, a backup job, a forget, under both policies."""
    h = Host(tmp_path_factory.mktemp("schema"))
    h.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb")
    h.ok("mock", "define", "old", "--disk", "vda", "--policy", "chained")
    for dom in ("vm", "old"):
        for n in ("a", "b", "c"):
            h.ok("create", dom, n, "--reason", "nightly")
        h.ok("delete", dom, "b")
    target = h.folder / "bk"
    target.mkdir()
    h.ok("mock", "backup", "vm", str(target), "--checkpoint", "d")  # another tool's job
    h.ok("record-backup", "vm", "job-1", "--outcome", "completed")
    h.ok("import")
    return h


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_every_event_printed_by_log_and_follow_matches_the_published_schema(busy: Host) -> None:
    check = validator()
    as_json = busy.ok_json("log")
    as_lines = [json.loads(x) for x in busy.ok("log", "--jsonl").stdout.splitlines()]
    follow = busy.ok("follow", "--after", "0", "--jsonl", "--timeout", "0.3")
    followed = [json.loads(x) for x in follow.stdout.splitlines()]
    assert as_json == as_lines == followed  # one shape, whichever command prints it
    assert len({e["type"] for e in as_json}) >= 6, {e["type"] for e in as_json}
    for event in as_json:
        check.validate(event)
        assert event["schema"] == "ckpt-ledger/event/1"


def test_the_schema_refuses_what_is_not_an_event() -> None:
    check = validator()
    good = {"schema": "ckpt-ledger/event/1", "position": 1, "stream_version": 1,
            "domain": "vm", "stream_id": "u", "type": "CheckpointCreated",
            "recorded_at": "2026-12-04T05:00:00Z", "actor": "a", "host": "h", "reason": None,
            "correlation_id": None, "tool": "ckpt-ledger", "tool_version": "0.1.0", "data": {}}
    check.validate(good)
    for bad in ({**good, "position": 0}, {**good, "recorded_at": "yesterday"},
                {**good, "schema": "ckpt-ledger/event/2"}, {**good, "extra": 1},
                {k: v for k, v in good.items() if k != "data"}):
        assert not check.is_valid(bad), bad
