"""Bad input never corrupts anything: every refusal is one ``error: ... [CODE]`` line.

Each case runs the console-script function ``cli.app.main(argv)`` (the real entry point,
in-process) and checks: exit status != 0, exactly one line on stderr starting with
``error:`` and ending with libvirt's error-code name, no traceback anywhere, the ledger's
event count unchanged and the mock hypervisor's state file byte-identical.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Host, assert_one_error_line, sha256

BAD_NAMES = ["../x", "a/b", ".hidden", "", "with space", "new\nline", "ünïcode", "a" * 10_000]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Host:
    """vm: vda qcow2, vdb raw, vdc read-only, chain c1 <- c2; off: a shut-off domain."""
    h = Host(tmp_path_factory.mktemp("template"))
    h.ok("mock", "define", "vm", "--disk", "vda", "--disk", "vdb:raw", "--disk", "vdc:ro")
    h.ok("mock", "define", "off", "--disk", "vda", "--shut-off")
    h.ok("create", "vm", "c1", "--disk", "vda")
    h.ok("create", "vm", "c2", "--disk", "vda")
    return h


@pytest.fixture
def host(template: Host, tmp_path: Path) -> Host:
    """A fresh copy of the template host for each test."""
    return template.clone(tmp_path / "host")


def refused(h: Host, code: str | None, *argv: str, env: dict[str, str | None] | None = None,
            contains: str | None = None) -> str:
    """Run ``argv``; assert the one-line refusal and that nothing changed."""
    events, state = h.event_count(), h.state_digest()
    run = h.main(*argv, env=env)
    line = assert_one_error_line(run, code)
    if code == "USAGE":
        assert run.code == 2, run.code  # a malformed command line, as click's own
    if contains is not None:
        assert contains in line
    assert h.event_count() == events, "a refused command appended an event"
    assert h.state_digest() == state, "a refused command changed the hypervisor"
    assert h.tree("vm") == ({"c1": None, "c2": "c1"}, "c2")
    return line


# ----------------------------------------------------------------- names
@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]) + f"/{len(n)}")
def test_bad_checkpoint_name(host: Host, name: str) -> None:
    """checkpointName = [a-zA-Z0-9_-][a-zA-Z0-9_.-]* (ASCII): anything else fails the
    schema (§2.1), whether created or redefined."""
    refused(host, "XML_INVALID_SCHEMA", "create", "vm", name, "--disk", "vda")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "with space", "ünïcode"])
def test_bad_checkpoint_name_in_redefine(host: Host, tmp_path: Path, name: str) -> None:
    """The same schema applies to a redefined checkpoint's <name> and <parent><name>."""
    f = tmp_path / "bad.xml"
    f.write_text(f"<domaincheckpoint><name>{name}</name><creationTime>1</creationTime>"
                 "</domaincheckpoint>", encoding="utf-8")
    refused(host, "XML_INVALID_SCHEMA", "redefine", "vm", str(f))
    f.write_text(f"<domaincheckpoint><name>ok</name><parent><name>{name}</name></parent>"
                 "<creationTime>1</creationTime></domaincheckpoint>", encoding="utf-8")
    refused(host, "XML_INVALID_SCHEMA", "redefine", "vm", str(f))


# ------------------------------------------------------- create-time rules
CREATE_CASES = [
    # (id, argv, code, message fragment)
    ("unknown-domain", ["create", "nodom", "x"], "NO_DOMAIN", "nodom"),
    ("unknown-domain-list", ["list", "nodom"], "NO_DOMAIN", "nodom"),
    ("unknown-disk", ["create", "vm", "x", "--disk", "vdz"], "CONFIG_UNSUPPORTED",
     "no disk named 'vdz'"),
    ("disk-twice", ["create", "vm", "x", "--disk", "vda", "--disk", "vda"],
     "CONFIG_UNSUPPORTED", "specified twice"),
    ("no-with-bitmap", ["create", "vm", "x", "--disk", "vda,checkpoint=no,bitmap=x"],
     "XML_INVALID_SCHEMA", None),
    ("bad-diskspec-key", ["create", "vm", "x", "--disk", "vda,foo=bar"], "INVALID_ARG",
     "unable to parse diskspec"),
    ("bad-checkpoint-type", ["create", "vm", "x", "--disk", "vda,checkpoint=yes"],
     "INVALID_ARG", "unable to parse diskspec"),
    ("duplicate-name", ["create", "vm", "c1", "--disk", "vda"], "OPERATION_FAILED",
     "domain moment c1 already exists"),
    ("shut-off-domain", ["create", "off", "x"], "OPERATION_UNSUPPORTED",
     "cannot create checkpoint for inactive domain"),
    ("bitmap-on-raw", ["create", "vm", "x", "--disk", "vdb"], "CONFIG_UNSUPPORTED",
     "unsupported for storage type raw"),
    ("raw-by-default", ["create", "vm", "x"], "CONFIG_UNSUPPORTED",
     "unsupported for storage type raw"),
    ("bitmap-on-readonly", ["create", "vm", "x", "--disk", "vdc,checkpoint=bitmap"],
     "CONFIG_UNSUPPORTED", "is empty or readonly"),
    ("bitmap-name-not-checkpoint-name", ["create", "vm", "x", "--disk", "vda,bitmap=other"],
     "CONFIG_UNSUPPORTED", "must match checkpoint name 'x'"),
    ("delete-unknown", ["delete", "vm", "nope"], "NO_DOMAIN_CHECKPOINT", "'nope'"),
    ("children-and-children-only", ["delete", "vm", "c1", "--children", "--children-only"],
     "INVALID_ARG", "mutually exclusive"),
    ("show-unknown", ["show", "vm", "nope"], "NO_DOMAIN_CHECKPOINT", None),
    ("plan-unknown", ["plan", "vm", "--since", "nope"], "NO_DOMAIN_CHECKPOINT", None),
    ("list-from-unknown", ["list", "vm", "--from", "nope"], "NO_DOMAIN_CHECKPOINT", None),
    # a malformed command line: a usage error (exit status 2), as click's own
    ("descendants-without-from", ["list", "vm", "--descendants"], "USAGE", "requires --from"),
    ("tree-and-leaves", ["list", "vm", "--tree", "--leaves"], "USAGE", "mutually exclusive"),
    ("tree-and-roots", ["list", "vm", "--tree", "--roots"], "USAGE", "mutually exclusive"),
    ("json-and-jsonl", ["log", "--json", "--jsonl"], "USAGE", "mutually exclusive"),
    ("bad-policy", ["mock", "define", "vm9", "--disk", "vda", "--policy", "lazy"],
     "INVALID_ARG", "chained or independent"),
    ("mock-define-existing", ["mock", "define", "vm", "--disk", "vda"], "OPERATION_FAILED",
     None),
    ("mock-bad-disk-spec", ["mock", "define", "vm9", "--disk", "vda:zip"], "INVALID_ARG", None),
    ("write-negative", ["mock", "write", "vm", "vda", "--", "-5", "10"], "INVALID_ARG", None),
    ("write-beyond-1GiB", ["mock", "write", "vm", "vda", "1G", "1"], "INVALID_ARG",
     "outside disk vda"),
    ("write-far-beyond", ["mock", "write", "vm", "vda", "2G", "64k"], "INVALID_ARG", None),
    ("write-non-numeric", ["mock", "write", "vm", "vda", "abc", "10"], "INVALID_ARG", None),
    ("write-zero-length", ["mock", "write", "vm", "vda", "0", "0"], "INVALID_ARG", None),
    ("write-readonly", ["mock", "write", "vm", "vdc", "0", "10"], "OPERATION_INVALID", None),
    ("write-shut-off", ["mock", "write", "off", "vda", "0", "10"], "OPERATION_INVALID", None),
    ("extents-unknown-bitmap", ["mock", "extents", "vm", "vda", "zz"],
     "CHECKPOINT_INCONSISTENT", None),
    # numbers beyond every limit, and digits that are not ASCII (issue 11 items 9, 10)
    ("write-superscript", ["mock", "write", "vm", "vda", "\u00b2", "10"], "INVALID_ARG", None),
    ("write-5000-digits", ["mock", "write", "vm", "vda", "9" * 5000, "10"], "INVALID_ARG",
     "below 2^63"),
    ("as-of-double-dash", ["list", "vm", "--as-of=--5"], "INVALID_ARG", "neither"),
    ("as-of-superscript", ["list", "vm", "--as-of", "\u00b2"], "INVALID_ARG", "neither"),
    ("as-of-2^63", ["list", "vm", "--as-of", str(1 << 63)], "INVALID_ARG", "at most"),
    ("as-of-5000-digits", ["show", "vm", "c1", "--as-of", "9" * 5000], "INVALID_ARG",
     "at most"),
    ("since-23-digits", ["log", "--since", "9" * 23], "INVALID_ARG", "at most"),
    ("until-superscript", ["log", "--until", "\u00b2"], "INVALID_ARG", None),
]


@pytest.mark.parametrize("argv,code,fragment", [c[1:] for c in CREATE_CASES],
                         ids=[c[0] for c in CREATE_CASES])
def test_refused_command(host: Host, argv: list[str], code: str, fragment: str | None) -> None:
    """libvirt's error codes (§3, §6 error catalogue), with nothing recorded or changed."""
    refused(host, code, *argv, contains=fragment)



@pytest.mark.parametrize("argv", [
    ["mock", "write", "vm", "vda", "-5", "10"],  # a negative offset parses as an option
    ["follow", "--after", "9" * 23],
    ["follow", "--after", "\u00b2"],
    ["record-backup", "vm", "j", "--outcome", "completed", "--bytes", "9" * 5000],
    ["create", "vm", "x", "--bogus"],
    ["list"],
    [],
], ids=["negative-offset", "follow-after-23-digits", "follow-after-superscript",
        "backup-bytes-5000-digits", "unknown-option", "missing-argument", "no-arguments"])
def test_usage_error_is_one_line_exit_2(host: Host, argv: list[str]) -> None:
    """Usage errors print one line `error: ...` and exit 2 (cli/app.py's contract)."""
    events, state = host.event_count(), host.state_digest()
    run = host.main(*argv)
    assert run.code == 2
    assert_one_error_line(run)
    assert host.event_count() == events and host.state_digest() == state


# --------------------------------------------------------------- redefine
C1_UNDER_C2 = ("<domaincheckpoint><name>c1</name><parent><name>c2</name></parent>"
               "<creationTime>5</creationTime></domaincheckpoint>")
REDEFINE_CASES = [
    ("unknown-parent", "<domaincheckpoint><name>r1</name><parent><name>ghost</name></parent>"
     "<creationTime>5</creationTime></domaincheckpoint>", "INVALID_ARG",
     "parent ghost for moment r1 not found"),
    ("own-parent", "<domaincheckpoint><name>r1</name><parent><name>r1</name></parent>"
     "<creationTime>5</creationTime></domaincheckpoint>", "INVALID_ARG",
     "cannot set moment r1 as its own parent"),
    ("cycle", C1_UNDER_C2, "INVALID_ARG", "parent c2 would create cycle to c1"),
    ("no-name", "<domaincheckpoint><creationTime>5</creationTime></domaincheckpoint>",
     "XML_ERROR", "a redefined checkpoint must have a name"),
    ("no-creation-time", "<domaincheckpoint><name>r1</name></domaincheckpoint>",
     "INTERNAL_ERROR", "missing creationTime from existing checkpoint"),
    ("malformed", "<domaincheckpoint><name>r1</nmae></domaincheckpoint>", "XML_ERROR", None),
    ("truncated", "<domaincheckpoint><name>r1</name><creationTime>5</creat", "XML_ERROR",
     None),
    ("not-xml", "\x00\x01garbage", "XML_ERROR", None),
    ("empty-file", "", "XML_ERROR", None),
    ("wrong-root", "<domainsnapshot><name>r1</name></domainsnapshot>", "XML_INVALID_SCHEMA",
     None),
    ("empty-disks", "<domaincheckpoint><name>r1</name><creationTime>5</creationTime><disks/>"
     "</domaincheckpoint>", "XML_INVALID_SCHEMA", None),
    ("billion-laughs", '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n'
     ' <!ENTITY lol "lol">\n'
     + "".join(f' <!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">\n'
               for i in range(1, 10))
     + ']>\n<domaincheckpoint><name>r1</name><description>&lol9;</description>'
     "<creationTime>5</creationTime></domaincheckpoint>", "XML_ERROR", None),
    ("year-10000", "<domaincheckpoint><name>r1</name><creationTime>253402300800"
     "</creationTime></domaincheckpoint>", "INVALID_ARG", "after the year 9999"),
    ("creation-time-5000-digits", "<domaincheckpoint><name>r1</name><creationTime>"
     + "9" * 5000 + "</creationTime></domaincheckpoint>", "XML_INVALID_SCHEMA",
     "(5000 characters)"),
    ("disk-size-5000-digits", "<domaincheckpoint><name>r1</name><creationTime>5</creationTime>"
     "<disks><disk name='vda' size='" + "9" * 5000 + "'/></disks></domaincheckpoint>",
     "XML_INVALID_SCHEMA", "(5000 characters)"),
    ("wrong-uuid", "<domaincheckpoint><name>r1</name><creationTime>5</creationTime>"
     "<domain type='kvm'><name>vm</name><uuid>00000000-0000-0000-0000-000000000001</uuid>"
     "</domain></domaincheckpoint>", "INVALID_ARG", "must use uuid"),
]


@pytest.mark.parametrize("xml,code,fragment", [c[1:] for c in REDEFINE_CASES],
                         ids=[c[0] for c in REDEFINE_CASES])
def test_refused_redefine(host: Host, tmp_path: Path, xml: str, code: str,
                          fragment: str | None) -> None:
    """REDEFINE rules (§2.1, §3.3): name and creationTime required, the parent must exist,
    not be itself, make no cycle; the XML must be well-formed and carry no DOCTYPE."""
    f = tmp_path / "in.xml"
    f.write_text(xml, encoding="utf-8")
    refused(host, code, "redefine", "vm", str(f), contains=fragment)


def test_external_entity_is_never_read(host: Host, tmp_path: Path) -> None:
    """An external entity (XXE) is refused and /etc/passwd's content appears nowhere."""
    f = tmp_path / "xxe.xml"
    f.write_text('<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY xxe SYSTEM '
                 '"file:///etc/passwd">]>\n<domaincheckpoint><name>r1</name>'
                 "<description>&xxe;</description><creationTime>5</creationTime>"
                 "</domaincheckpoint>")
    refused(host, "XML_ERROR", "redefine", "vm", str(f))
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    run = host.main("log", "--json")
    assert passwd not in run.stdout
    assert passwd not in host.state.read_text()
    assert passwd.encode() not in host.db.read_bytes()


@pytest.mark.parametrize("kind", ["directory", "missing", "too-large"])
def test_unusable_redefine_file(host: Host, tmp_path: Path, kind: str) -> None:
    """The FILE of `redefine` must be a readable file of at most 1 MiB."""
    target = {"directory": tmp_path, "missing": tmp_path / "nope.xml",
              "too-large": tmp_path / "big.xml"}[kind]
    if kind == "too-large":
        target.write_text("<domaincheckpoint><name>r1</name><creationTime>5</creationTime>"
                          "<description>" + "a" * (1 << 20) + "</description>"
                          "</domaincheckpoint>")
    code = "XML_ERROR" if kind == "too-large" else "INVALID_ARG"
    refused(host, code, "redefine", "vm", str(target))


# ------------------------------------------------------------------ stores
def _store_dir(p: Path) -> None:
    p.mkdir()


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 20)


def _text(p: Path) -> None:
    p.write_text("this is not a database\n")


def _truncated_sqlite(p: Path) -> None:
    db = sqlite3.connect(p)
    db.execute("create table t(x)")
    db.executemany("insert into t values (?)", [("x" * 500,)] * 200)
    db.commit()
    db.close()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("make", [_store_dir, _garbage, _text, _truncated_sqlite],
                         ids=["directory", "garbage", "text-file", "truncated-sqlite"])
@pytest.mark.parametrize("argv", [["list", "vm"], ["create", "vm", "x", "--disk", "vda"],
                                  ["log"]], ids=["read", "write", "log"])
def test_unusable_store_is_reported_and_left_alone(host: Host, tmp_path: Path,
                                                   make: Callable[[Path], None],
                                                   argv: list[str]) -> None:
    """A store that is not a ledger is refused (STORE_ERROR) and left byte-identical."""
    bad = tmp_path / "bad.db"
    make(bad)
    before = None if bad.is_dir() else sha256(bad)
    refused(host, "STORE_ERROR", *argv, env=host.env(CKPT_LEDGER_STORE=f"sqlite:///{bad}"))
    if before is not None:
        assert sha256(bad) == before
    # a bare path is SQLite, and is refused the same way
    refused(host, "STORE_ERROR", *argv, env=host.env(CKPT_LEDGER_STORE=str(bad)))


@pytest.mark.parametrize("url", ["foo://x", "sqlite://host/x.db", "sqlite:///"])
def test_bad_store_url(host: Host, url: str) -> None:
    """An unknown scheme or a malformed file URL is STORE_URL."""
    refused(host, "STORE_URL", "list", "vm", env=host.env(CKPT_LEDGER_STORE=url))


# ------------------------------------------------------- mock state file
CORRUPT_STATES = {
    "garbage": b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe",
    "wrong-shape": b'{"domains": [1, 2, 3], "version": 1}',
    "a-list": b"[1, 2, 3]",
    "wrong-version": b'{"domains": {}, "version": 99}',
    "version-2": b'{"version":2,"domains":{}}',  # an old one-document state
    "header-cut": None,  # the real journal's header line cut short
    "damaged-middle": None,  # one byte of the real journal's second line changed
}


@pytest.mark.parametrize("kind", list(CORRUPT_STATES))
@pytest.mark.parametrize("argv", [["create", "vm", "x", "--disk", "vda"],
                                  ["mock", "write", "vm", "vda", "0", "10"],
                                  ["mock", "define", "vm9", "--disk", "vda"],
                                  ["delete", "vm", "c2"]],
                         ids=["create", "write", "define", "delete"])
def test_corrupt_mock_state_is_reported_not_overwritten(host: Host, kind: str,
                                                        argv: list[str]) -> None:
    """A corrupt mock state file is STATE_ERROR and is left exactly as it was (a torn
    last line is an interrupted write instead: tests/test_mock_journal.py)."""
    data = CORRUPT_STATES[kind]
    full = host.state.read_bytes()
    if kind == "header-cut":
        data = full[: full.index(b"\n") // 2]
    elif kind == "damaged-middle":
        i = full.index(b"\n") + 20
        data = full[:i] + bytes([full[i] ^ 0x01]) + full[i + 1:]
    assert data is not None
    host.state.write_bytes(data)
    events = host.event_count()
    line = assert_one_error_line(host.main(*argv), "STATE_ERROR")
    assert str(host.state) in line
    assert host.state.read_bytes() == data
    assert host.event_count() == events


def test_missing_hypervisor_for_a_write_command(host: Host) -> None:
    """Commands that change the hypervisor need --hypervisor (reads do not)."""
    no_hv = host.env(CKPT_LEDGER_HYPERVISOR=None)
    refused(host, "NO_CONNECT", "create", "vm", "x", "--disk", "vda", env=no_hv)
    refused(host, "NO_CONNECT", "delete", "vm", "c2", env=no_hv)
    refused(host, "NO_CONNECT", "mock", "write", "vm", "vda", "0", "10", env=no_hv)
    run = host.main("list", "vm", "--json", env=no_hv)
    assert run.code == 0 and len(run.json()) == 2


def test_hypervisor_in_missing_directory(host: Host, tmp_path: Path) -> None:
    """A mock state file whose directory does not exist is STATE_ERROR, and nothing is made."""
    env = host.env(CKPT_LEDGER_HYPERVISOR=f"mock:///{tmp_path}/nope/h.json")
    refused(host, "STATE_ERROR", "create", "vm", "x", env=env)
    assert not (tmp_path / "nope").exists()


def test_real_entry_point_subprocess(host: Host) -> None:
    """The installed console script: one error line, no traceback, exit 1, JSON stays pure."""
    run = host.proc("create", "vm", "../x", "--disk", "vda")
    assert_one_error_line(run, "XML_INVALID_SCHEMA")
    assert run.code == 1 and run.stdout == ""
    run = host.proc("create", "vm", "c1", "--disk", "vda", "--json")
    assert_one_error_line(run, "OPERATION_FAILED")
    assert run.stdout == ""



def test_real_entry_point_usage_error(host: Host) -> None:
    """`ckpt-ledger create vm x --bogus`: exit 2, one line `error: ...`, no traceback."""
    run = host.proc("create", "vm", "x", "--bogus")
    assert run.code == 2
    assert_one_error_line(run)


FORGERIES = ["alice\nfake line", "x\x1b[31mred", "rtl\u202eevil", "tab\there", "cr\rreturn"]


@pytest.mark.parametrize("text", FORGERIES)
def test_recorded_text_never_forges_lines_or_escapes(host: Host, text: str) -> None:
    """An actor, a reason, a description, a tool with control or format characters is
    recorded exactly (JSON shows it as given) and shown escaped in every text output: one
    line per row, no raw control character."""
    xml_ok = "\x1b" not in text  # XML 1.0 has no place for ESC: libvirt refuses it too
    description = ["--description", text] if xml_ok else []
    run = host.cli("--actor", text, "create", "vm", "forged", "--disk", "vda", *description,
                   "--reason", text)
    assert run.code == 0, run
    host.ok("record-backup", "vm", "j1", "--tool", text, "--outcome", "failed", "--error", text)
    (event,) = [e for e in host.ok_json("log") if e["data"].get("name") == "forged"
                and e["type"] == "CheckpointCreated"]
    assert event["actor"] == text and event["reason"] == text
    # (XML turns a carriage return into a newline, as libvirt's parser does)
    assert host.ok_json("show", "vm", "forged")["description"] == (
        text.replace("\r", "\n") if xml_ok else None)
    for argv, rows in ((["log"], len(host.ok_json("log"))), (["backups", "vm"], 1)):
        out = host.ok(*argv).stdout
        assert len(out.splitlines()) == 2 + rows, (argv, out)
        assert all(c.isprintable() for c in out.replace("\n", "")), (argv, out)
    for argv in (["show", "vm", "forged"], ["history", "vm", "forged"]):
        out = host.ok(*argv).stdout
        assert all(c.isprintable() for c in out.replace("\n", "")), (argv, out)
    assert len(host.ok("history", "vm", "forged").stdout.splitlines()) == len(
        host.ok_json("history", "vm", "forged"))


def test_a_time_no_date_can_show_is_shown_as_its_number(host: Host) -> None:
    """A store written by another tool may hold a creationTime after the year 9999: list,
    show and log still answer, showing the number (issue 11 item 6)."""
    from adapters.mock import MockHypervisor
    from ledger import Ledger
    from ledger.domain.events import CheckpointRedefined

    hv = MockHypervisor(str(host.state))
    with Ledger.open(host.store, hv) as lg:
        info = hv.domain_info("vm")
        far = 10**12
        lg.writer.append(info, [CheckpointRedefined(
            name="far", parent=None, creation_time=far, disks=(), xml="<x/>")], "forged")
    assert str(far) in host.ok("list", "vm").stdout
    assert str(far) in host.ok("show", "vm", "far").stdout
    assert host.ok("log").stdout.count("\n") > 3


NUMBERS = ["0", "-1", str(1 << 63), "1" + "0" * 5000]
NUMERIC_OPTIONS = [
    ["list", "vm", "--as-of=V"], ["show", "vm", "c1", "--as-of=V"], ["bitmaps", "vm", "--as-of=V"],
    ["plan", "vm", "--since", "c1", "--as-of=V"], ["log", "--since=V"], ["log", "--until=V"],
    ["follow", "--after=V", "--timeout", "0.1"], ["--lock-timeout=V", "list", "vm"],
    ["verify-log", "--anchor", "V:" + "0" * 64], ["mock", "write", "vm", "vda", "V", "64k"],
    ["mock", "write", "vm", "vda", "0", "V"],
    ["record-backup", "vm", "j", "--outcome", "completed", "--bytes=V"],
    ["record-backup", "vm", "j", "--outcome", "completed", "--seconds=V"],
    ["watch", "--once", "--interval=V"], ["backups", "vm", "--between", "V", "V"],
]


@pytest.mark.parametrize("value", NUMBERS, ids=["0", "-1", "2^63", "10^5000"])
@pytest.mark.parametrize("argv", NUMERIC_OPTIONS, ids=[" ".join(a) for a in NUMERIC_OPTIONS])
def test_every_numeric_option_at_its_limits(host: Host, argv: list[str], value: str) -> None:
    """0, -1, 2^63 and 10^5000 in every numeric option: an answer, or one line and a
    non-zero exit; never a traceback, never half a change (issue 11's "whole class")."""
    args = [a.replace("V", value) for a in argv]
    count = host.event_count()
    run = host.main(*args)  # the console script's entry point (usage errors on one line)
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    if run.code != 0:
        assert run.code in (1, 2), run
        assert_one_error_line(run)
        assert host.event_count() == count, args


@pytest.mark.parametrize("argv", [["replay"], ["replay", "vm", "--dry-run"], ["verify"],
                                  ["verify", "--record"], ["verify-log"], ["head"]])
def test_recovery_and_verify_refuse_a_wrong_ledger(host: Host, tmp_path: Path,
                                                    argv: list[str]) -> None:
    """A mistyped store URL is never a silent success (issue 13, safety first): a store that
    does not exist is not created, and an empty one is named, one line each, exit 1."""
    from ledger import Ledger

    typo = tmp_path / "typo.db"
    run = host.main("--store", f"sqlite:///{typo}", *argv)
    assert "does not exist" in assert_one_error_line(run, "STORE_ERROR")
    assert not typo.exists()
    empty = tmp_path / "empty.db"
    Ledger.open(f"sqlite:///{empty}").close()
    run = host.main("--store", f"sqlite:///{empty}", *argv)
    assert "holds no events: is it the right ledger?" in assert_one_error_line(run, "STORE_ERROR")
