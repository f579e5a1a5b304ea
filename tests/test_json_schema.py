"""The published JSON Schemas (ledger/schemas/) hold for what the CLI really prints: one event
shape for ``log --json``, ``log --jsonl`` and ``follow --jsonl``, and one shape for each other
command's ``--json``, every object named by its ``schema`` field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from helpers import Host

from ledger.app.shapes import SHAPES, json_schema

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


def validator(name: str = "event") -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_published_schemas_are_the_output_models() -> None:
    published = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert published == set(SHAPES), "run: python -m ledger.app.shapes ledger/schemas"
    for name in SHAPES:
        assert json.loads((SCHEMAS / f"{name}.schema.json").read_text()) == json_schema(name), (
            f"{name}.schema.json is stale: run python -m ledger.app.shapes ledger/schemas")


def test_every_commands_json_matches_its_published_schema(busy: Host, tmp_path: Path) -> None:
    h = busy.clone(tmp_path / "h")
    outputs = [
        h.ok_json("create", "vm", "e"), h.ok_json("show", "vm", "e"), h.ok_json("list", "vm"),
        h.ok_json("bitmaps", "old"), h.ok_json("plan", "old", "--since", "a"),
        h.ok_json("history", "vm", "a"), h.ok_json("backups", "vm"),
        h.ok_json("backups", "vm", "--between", "1", "1"),
        h.ok_json("record-backup", "vm", "job-2", "--outcome", "failed", "--error", "disk full"),
        h.ok_json("delete", "vm", "e"), h.ok_json("info"), h.ok_json("import"),
        h.ok_json("replay", "--dry-run"), h.ok_json("verify"), h.ok_json("verify-log"),
        h.ok_json("head"), h.ok_json("rebuild"), h.ok_json("log"),
        h.ok_json("export", str(tmp_path / "x.jsonl")),
        h.ok_json("mock", "extents", "vm", "vda", "a"), h.ok_json("mock", "checkpoints", "vm"),
    ]
    (tmp_path / "bk").mkdir()
    outputs.append(h.ok_json("mock", "backup", "vm", str(tmp_path / "bk")))
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    outputs.append(h.ok_json("copy", "--from", h.store, "--to", copy))
    outputs.append(h.ok_json("--store", f"sqlite:///{tmp_path / 'new.db'}", "import-log",
                             str(tmp_path / "x.jsonl")))
    xmls = tmp_path / "xml"
    xmls.mkdir()
    (xmls / "a.xml").write_text(h.ok("show", "old", "a", "--xml").stdout)
    outputs.append(h.ok_json("--store", f"sqlite:///{tmp_path / 'x.db'}", "import-xml", "old",
                             str(xmls)))
    seen = set()
    for out in outputs:
        for obj in out if isinstance(out, list) else [out]:
            name = obj["schema"].split("/")[1]
            validator(name).validate(obj)
            seen.add(name)
    assert seen == set(SHAPES), set(SHAPES) - seen


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


def test_the_schema_refuses_what_is_not_an_event(busy: Host) -> None:
    check = validator()
    good = next(e for e in busy.ok_json("log") if e["type"] == "CheckpointCreated")
    check.validate(good)
    for bad in ({**good, "position": 0}, {**good, "recorded_at": "yesterday"},
                {**good, "schema": "ckpt-ledger/event/2"}, {**good, "extra": 1},
                {**good, "type": "Nothing"}, {**good, "data": {}},
                {**good, "data": {**good["data"], "creation_time": "noon"}},
                {k: v for k, v in good.items() if k != "data"}):
        assert not check.is_valid(bad), bad
