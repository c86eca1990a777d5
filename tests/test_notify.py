"""Breach and failure notices, against a real SMTP server (aiosmtpd) and a webhook
receiver, both started on 127.0.0.1 for the test and stopped in teardown."""

from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from aiosmtpd.controller import Controller

from .conftest import _free_port, _Inbox
from aiosmtpd.smtp import AuthResult

from reporting.errors import ConfigError, LevtrackError
from reporting.measures.limits import LIMIT_SCHEMA
from reporting.notify import Notice, NotifyConfig, NotifyError, breach_notice, failure_notice, send

DAY = date(2024, 3, 15)
RUN_ID = "20240316T003000Z-ab12cd"
HOSTILE = '<script>alert("x")</script> & Sons'
PDF_BYTES = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n\x00\xff binary tail\n%%EOF\n"


# ----------------------------------------------------------------------- servers


@pytest.fixture
def smtp_auth_server():
    inbox = _Inbox()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"levtrack" and auth_data.password == b"s3cret pw"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port(),
                            authenticator=authenticator, auth_require_tls=False, auth_required=True)
    controller.start()
    try:
        yield controller, inbox, logins
    finally:
        controller.stop()


class _Webhook:
    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200


@pytest.fixture
def webhook(monkeypatch):
    # A proxy configured in the environment must not take 127.0.0.1 traffic.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    state = _Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-secret", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ------------------------------------------------------------------------- data


def _row(entity_id, metric, value, limit, kind, utilization, status, days, business_date=DAY):
    return {"business_date": business_date, "entity_id": entity_id, "metric": metric, "value": value,
            "limit": limit, "kind": kind, "warn_at": 0.8, "utilization": utilization, "status": status,
            "prev_utilization": None, "days_in_breach": days}


def _utilization(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LIMIT_SCHEMA)


@pytest.fixture
def utilization() -> pl.DataFrame:
    return _utilization([
        _row("E1", "gross_leverage", 6.5, 5.0, "max", 1.3, "breach", 3),
        _row("E1", "net_leverage", 4.2, 5.0, "max", 0.84, "warning", 0),
        _row("E2", "var_99_1d_hist_usd", 1_250_000.4, 1_000_000.0, "max", 1.2500004, "breach", 1),
        _row("E2", "gross_leverage", 2.0, 5.0, "max", 0.4, "ok", 0),
        _row("E3", "leverage_ratio_pct", 2.5, 3.0, "min", 1.2, "breach", 2),
        _row("E4", "gross_leverage", 1.0, 5.0, "max", 0.2, "ok", 0),
        # Insolvent: leverage undefined, in breach, no utilization -> listed first.
        _row("E5", "gross_leverage", None, 5.0, "max", None, "breach", 1),
        # An earlier date's breach is not today's news.
        _row("E4", "gross_leverage", 9.0, 5.0, "max", 1.8, "breach", 1, business_date=date(2024, 3, 14)),
    ])


@pytest.fixture
def entities() -> pl.DataFrame:
    return pl.DataFrame({
        "entity_id": ["E1", "E2", "E3", "E4", "E5"],
        "name": ["Alpha Fund", HOSTILE, "Gamma Capital", "Delta", "Epsilon Ltd"],
        "tier1_capital_usd": [None, 5e6, None, None, None],
    }, schema={"entity_id": pl.String, "name": pl.String, "tier1_capital_usd": pl.Float64})


@pytest.fixture
def summary_pdf(tmp_path) -> Path:
    path = tmp_path / "archive" / "2024-03-15" / RUN_ID / "summary.pdf"
    path.parent.mkdir(parents=True)
    path.write_bytes(PDF_BYTES)
    return path


EXPECTED_LINES = [
    "1. Epsilon Ltd (E5): gross_leverage n/a against max limit 5.00× (utilization n/a, in breach 1 day)",
    "2. Alpha Fund (E1): gross_leverage 6.50× against max limit 5.00× (utilization 130.0 %, in breach 3 days)",
    f"3. {HOSTILE} (E2): var_99_1d_hist_usd $1,250,000 against max limit $1,000,000 "
    "(utilization 125.0 %, in breach 1 day)",
    "4. Gamma Capital (E3): leverage_ratio_pct 2.50 % against min limit 3.00 % "
    "(utilization 120.0 %, in breach 2 days)",
]


def _config(controller, **kw) -> NotifyConfig:
    return NotifyConfig(recipients=("risk@example.com", "Compliance Desk <compliance@example.com>"),
                        sender="levtrack@example.com", smtp_host=controller.hostname,
                        smtp_port=controller.port, timeout_seconds=10, **kw)


# ------------------------------------------------------------------------ tests


def test_breach_notice_content(utilization, entities, summary_pdf):
    notice = breach_notice(DAY, RUN_ID, utilization, entities, summary_pdf=summary_pdf,
                           report_dir=summary_pdf.parent)
    assert notice is not None
    assert notice.subject == "[levtrack] 2024-03-15: 4 limit breaches at 4 entities"
    assert notice.attachments == (summary_pdf,)
    lines = notice.text.splitlines()
    body = [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert body == EXPECTED_LINES  # highest utilization first, insolvent (undefined) on top
    assert f"run {RUN_ID}" in notice.text
    assert "4 limit breaches at 4 entities, highest utilization first:" in notice.text
    assert "The compliance summary is attached (summary.pdf)." in notice.text
    assert f"Reports: {summary_pdf.parent}" in notice.text
    # Not in breach today: warnings, ok rows, yesterday's breach.
    assert "net_leverage" not in notice.text and "Delta (E4)" not in notice.text

    for expected in ("Alpha Fund (E1)", "Gamma Capital (E3)", "6.50×", "5.00×", "130.0 %", "$1,250,000",
                     "$1,000,000", "2.50 %", "3.00 %", "min", "<td class=\"n\">3 days</td>"):
        assert expected in notice.html

    p = notice.payload
    assert p["event"] == "limit_breach" and p["business_date"] == "2024-03-15" and p["run_id"] == RUN_ID
    assert p["breach_count"] == 4 and p["entity_count"] == 4
    assert [(b["entity_id"], b["metric"]) for b in p["breaches"]] == [
        ("E5", "gross_leverage"), ("E1", "gross_leverage"), ("E2", "var_99_1d_hist_usd"),
        ("E3", "leverage_ratio_pct")]
    assert p["breaches"][1] == {
        "entity_id": "E1", "entity_name": "Alpha Fund", "metric": "gross_leverage", "value": 6.5,
        "limit": 5.0, "kind": "max", "utilization": 1.3, "days_in_breach": 3, "value_text": "6.50×",
        "limit_text": "5.00×", "utilization_text": "130.0 %"}
    assert p["breaches"][0]["value"] is None and p["breaches"][0]["utilization"] is None
    json.dumps(p, allow_nan=False)  # valid JSON as it stands


def test_no_notice_without_breach(utilization, entities, summary_pdf):
    calm = utilization.filter((pl.col("status") != "breach") | (pl.col("business_date") != DAY))
    assert breach_notice(DAY, RUN_ID, calm, entities, summary_pdf=summary_pdf, report_dir=None) is None
    empty = pl.DataFrame(schema=LIMIT_SCHEMA)
    assert breach_notice(DAY, RUN_ID, empty, entities, summary_pdf=None, report_dir=None) is None
    # Warnings alone do not trigger a notice either.
    assert calm.filter(pl.col("business_date") == DAY)["status"].to_list().count("warning") == 1


def test_breach_notice_delivered_by_email_and_webhook(smtp_server, webhook, utilization, entities,
                                                      summary_pdf):
    controller, inbox = smtp_server
    url, hook = webhook
    notice = breach_notice(DAY, RUN_ID, utilization, entities, summary_pdf=summary_pdf,
                           report_dir=summary_pdf.parent)
    config = _config(controller, webhook_url=url)

    assert send(notice, config) == ["email:2 recipients", "webhook"]

    # E-mail: one message, to every recipient, text + HTML + the PDF byte for byte.
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert sorted(envelope.rcpt_tos) == ["compliance@example.com", "risk@example.com"]
    assert envelope.mail_from == "levtrack@example.com"
    msg = inbox.messages()[0]
    assert msg["Subject"] == "[levtrack] 2024-03-15: 4 limit breaches at 4 entities"
    assert msg["From"] == "levtrack@example.com"
    assert {a.addr_spec for a in msg["To"].addresses} == {"risk@example.com", "compliance@example.com"}
    assert msg["Message-ID"] and msg["Date"]
    text = msg.get_body(("plain",)).get_content()
    for line in EXPECTED_LINES:
        assert line in text
    html = msg.get_body(("html",)).get_content()
    assert "Alpha Fund (E1)" in html and "$1,250,000" in html and "<script>" not in html
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["summary.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == PDF_BYTES

    # Webhook: one JSON POST naming the breaches.
    assert len(hook.requests) == 1
    req = hook.requests[0]
    assert req["path"] == "/hooks/T0KEN-secret"
    assert req["headers"]["Content-Type"].startswith("application/json")
    payload = json.loads(req["body"])
    assert payload["event"] == "limit_breach" and payload["breach_count"] == 4
    assert [(b["entity_name"], b["metric"], b["value"], b["limit"]) for b in payload["breaches"]] == [
        ("Epsilon Ltd", "gross_leverage", None, 5.0),
        ("Alpha Fund", "gross_leverage", 6.5, 5.0),
        (HOSTILE, "var_99_1d_hist_usd", 1_250_000.4, 1_000_000.0),
        ("Gamma Capital", "leverage_ratio_pct", 2.5, 3.0),
    ]


def test_failure_notice(smtp_server, webhook):
    controller, inbox = smtp_server
    url, hook = webhook
    notice = failure_notice(DAY, RUN_ID, "ValidationFailed: balances: 3 rows with a null amount <b>")
    assert notice.subject == "[levtrack] 2024-03-15: run FAILED"
    assert notice.text == (
        f"The levtrack daily run for business date 2024-03-15 (run {RUN_ID}) FAILED.\n"
        "The run did not complete: treat this date's limits as unchecked until a re-run succeeds.\n\n"
        "Error:\nValidationFailed: balances: 3 rows with a null amount <b>\n"
    )
    assert "null amount &lt;b&gt;" in notice.html and "<b>" not in notice.html
    assert notice.attachments == ()
    assert notice.payload["event"] == "run_failed"
    assert notice.payload["error"] == "ValidationFailed: balances: 3 rows with a null amount <b>"

    assert send(notice, _config(controller, webhook_url=url)) == ["email:2 recipients", "webhook"]
    msg = inbox.messages()[0]
    assert msg["Subject"] == "[levtrack] 2024-03-15: run FAILED"
    assert "3 rows with a null amount" in msg.get_body(("plain",)).get_content()
    assert list(msg.iter_attachments()) == []
    assert json.loads(hook.requests[0]["body"])["run_id"] == RUN_ID


def test_hostile_entity_name_is_escaped_in_html(utilization, entities):
    notice = breach_notice(DAY, RUN_ID, utilization, entities, summary_pdf=None, report_dir=None)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Sons (E2)" in notice.html
    assert "<script>" not in notice.html
    assert notice.html.count("<td>") >= 4  # our own markup is intact
    # Plain text carries the name as is (it is not HTML), the JSON too.
    assert f"{HOSTILE} (E2)" in notice.text
    assert notice.payload["breaches"][2]["entity_name"] == HOSTILE


def test_no_header_injection_from_data(smtp_server, utilization, entities):
    controller, inbox = smtp_server
    evil_name = "Evil Corp\r\nBcc: thief@evil.example\r\n\r\n<b>body</b>"
    ents = entities.with_columns(pl.when(pl.col("entity_id") == "E1").then(pl.lit(evil_name))
                                 .otherwise(pl.col("name")).alias("name"))
    evil_run = "run-1\r\nBcc: thief@evil.example"
    notice = breach_notice(DAY, evil_run, utilization, ents, summary_pdf=None, report_dir=None)
    assert "\r" not in notice.subject and "\n" not in notice.subject
    # The text body keeps one line per breach.
    assert "2. Evil Corp Bcc: thief@evil.example <b>body</b> (E1): gross_leverage 6.50×" in notice.text
    # Even a hand-made notice with CR/LF in its subject cannot add headers.
    forged = Notice(subject="hi\r\nBcc: thief@evil.example", text="t", html="<p>t</p>", payload={})
    send(notice, _config(controller))
    send(forged, _config(controller))
    for envelope, msg in zip(inbox.envelopes, inbox.messages()):
        assert "thief@evil.example" not in envelope.rcpt_tos
        assert msg["Bcc"] is None
        assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert inbox.messages()[1]["Subject"] == "hi Bcc: thief@evil.example"
    # Recipients and sender with CR/LF are refused outright.
    with pytest.raises(ConfigError, match="control characters"):
        NotifyConfig(recipients=("risk@example.com\r\nBcc: thief@evil.example",), smtp_host="127.0.0.1")
    with pytest.raises(ConfigError, match="control characters"):
        NotifyConfig(sender="x@example.com\nBcc: thief@evil.example")


def test_from_environ_and_enabled():
    assert NotifyConfig().enabled is False
    nothing = NotifyConfig.from_environ({})
    assert nothing.enabled is False and nothing == NotifyConfig()
    assert NotifyConfig.from_environ({"LEVTRACK_NOTIFY_TO": " ", "LEVTRACK_SMTP_HOST": ""}).enabled is False

    cfg = NotifyConfig.from_environ({
        "LEVTRACK_NOTIFY_TO": "risk@example.com, compliance@example.com ,",
        "LEVTRACK_NOTIFY_FROM": "levtrack@fund.example",
        "LEVTRACK_SMTP_HOST": "smtp.fund.example",
        "LEVTRACK_SMTP_PORT": "587",
        "LEVTRACK_SMTP_USER": "levtrack",
        "LEVTRACK_SMTP_PASSWORD": "hunter2",
        "LEVTRACK_SMTP_STARTTLS": "true",
        "LEVTRACK_WEBHOOK_URL": "https://hooks.example/services/T0KEN",
        "UNRELATED": "x",
    })
    assert cfg.recipients == ("risk@example.com", "compliance@example.com")
    assert cfg.sender == "levtrack@fund.example"
    assert (cfg.smtp_host, cfg.smtp_port, cfg.smtp_user, cfg.smtp_password) == (
        "smtp.fund.example", 587, "levtrack", "hunter2")
    assert cfg.smtp_starttls is True
    assert cfg.webhook_url == "https://hooks.example/services/T0KEN"
    assert cfg.enabled is True
    assert "hunter2" not in repr(cfg) and "T0KEN" not in repr(cfg)

    only_hook = NotifyConfig.from_environ({"LEVTRACK_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert only_hook.enabled is True and only_hook.recipients == ()

    for bad in ({"LEVTRACK_SMTP_PORT": "twenty-five"}, {"LEVTRACK_SMTP_STARTTLS": "maybe"},
                {"LEVTRACK_NOTIFY_TO": "risk@example.com"},  # no SMTP host: would drop notices
                {"LEVTRACK_NOTIFY_TO": "not-an-address", "LEVTRACK_SMTP_HOST": "h"},
                {"LEVTRACK_WEBHOOK_URL": "file:///etc/passwd"},
                {"LEVTRACK_NOTIFY_TO": "a@b.example", "LEVTRACK_SMTP_HOST": "h", "LEVTRACK_SMTP_USER": "u"}):
        with pytest.raises(ConfigError):
            NotifyConfig.from_environ(bad)


def test_nothing_configured_sends_nothing(utilization, entities):
    notice = breach_notice(DAY, RUN_ID, utilization, entities, summary_pdf=None, report_dir=None)
    assert send(notice, NotifyConfig()) == []


def test_unreachable_smtp_port_names_host_and_port():
    port = _free_port()  # bound then released: nothing listens there
    config = NotifyConfig(recipients=("risk@example.com",), smtp_host="127.0.0.1", smtp_port=port,
                          timeout_seconds=5)
    with pytest.raises(NotifyError) as exc:
        send(failure_notice(DAY, RUN_ID, "boom"), config)
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert isinstance(exc.value, LevtrackError) and exc.value.exit_code == 8
    assert exc.value.sent == []


def test_smtp_failure_does_not_stop_the_webhook(webhook):
    url, hook = webhook
    port = _free_port()
    config = NotifyConfig(recipients=("risk@example.com",), smtp_host="127.0.0.1", smtp_port=port,
                          webhook_url=url, timeout_seconds=5)
    with pytest.raises(NotifyError, match=f"127.0.0.1:{port}") as exc:
        send(failure_notice(DAY, RUN_ID, "boom"), config)
    assert exc.value.sent == ["webhook"]
    assert len(hook.requests) == 1


def test_webhook_non_2xx_is_an_error_without_leaking_the_token(webhook):
    url, hook = webhook
    hook.status = 500
    with pytest.raises(NotifyError, match="HTTP 500") as exc:
        send(failure_notice(DAY, RUN_ID, "boom"), NotifyConfig(webhook_url=url, timeout_seconds=5))
    assert "127.0.0.1" in str(exc.value) and "T0KEN" not in str(exc.value)
    hook.status = 302  # a redirect would drop the POST body: not a delivery
    with pytest.raises(NotifyError, match="HTTP 302"):
        send(failure_notice(DAY, RUN_ID, "boom"), NotifyConfig(webhook_url=url, timeout_seconds=5))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_with_credentials(smtp_auth_server):
    controller, inbox, logins = smtp_auth_server
    good = _config(controller, smtp_user="levtrack", smtp_password="s3cret pw")
    assert send(failure_notice(DAY, RUN_ID, "boom"), good) == ["email:2 recipients"]
    assert logins[-1] == (b"levtrack", b"s3cret pw") and len(inbox.envelopes) == 1

    bad = _config(controller, smtp_user="levtrack", smtp_password="wrong")
    with pytest.raises(NotifyError, match="refused the login") as exc:
        send(failure_notice(DAY, RUN_ID, "boom"), bad)
    assert "wrong" not in str(exc.value) and f"{controller.hostname}:{controller.port}" in str(exc.value)


def test_missing_summary_pdf_is_said_not_fatal(utilization, entities, tmp_path):
    notice = breach_notice(DAY, RUN_ID, utilization, entities, summary_pdf=tmp_path / "nope.pdf",
                           report_dir=None)
    assert notice.attachments == ()
    assert f"The summary PDF was not found at {tmp_path / 'nope.pdf'}." in notice.text
