"""Breach and failure notices: e-mail over SMTP and an optional JSON webhook.

A pure library: no Prefect here. The flow builds a notice with :func:`breach_notice`
(``None`` when nothing is in breach: no notice then) or :func:`failure_notice`, and hands
it to :func:`send` with a :class:`NotifyConfig`.

Credentials never come from a file in the repository: :meth:`NotifyConfig.from_environ`
reads environment variables, or the caller reads a Prefect Secret block and passes the
password in.

Decisions written down here:

* A breach is a ``limit_utilization`` row whose ``status`` is ``breach``; warnings do
  not trigger a notice. Rows of other business dates than the one notified are ignored,
  so passing the lake's whole table is harmless.
* Breaches are listed by utilization, highest first. A breach with no utilization (a
  figure undefined because the entity is insolvent) is the most severe and comes first.
* Numbers print as in the reports: money in whole dollars (``$1,234,567``), leverage
  with two decimals and ``×``, fractions as percentages with one decimal (``82.4 %``),
  ``*_pct`` columns (already percentages) with two decimals, a true minus sign, ``n/a``
  for an undefined figure. The formatting is repeated here rather than imported from
  ``reporting.render`` on purpose: a failure notice must go out even when rendering
  (WeasyPrint and its native libraries) is what broke.
* Names and ids come from outside: the HTML body escapes them, the plain-text body
  flattens control characters, and no header ever carries data other than the business
  date, the run id and counts, with CR/LF and other control characters removed.
* :func:`send` tries every configured channel even when one fails, then raises
  :class:`NotifyError` naming each failure (and which channels did go out). Secrets
  stay out of messages: the password never, the webhook only as scheme, host and port
  (webhook URLs usually embed a token).
"""

from __future__ import annotations

import html as _html
import json
import math
import os
import re
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from .errors import ConfigError, NotifyError

__all__ = [
    "NotifyConfig",
    "Notice",
    "NotifyError",
    "breach_notice",
    "failure_notice",
    "send",
]

SUBJECT_PREFIX = "[levtrack]"

NA = "n/a"
MINUS = "\u2212"
TIMES = "\u00d7"

_FRACTION_METRICS = frozenset(
    {"margin_utilization", "liquidation_distance", "max_open_interest_share", "open_interest_share"}
)
_INTEGER_METRICS = frozenset({"var_observations", "observations", "exceptions"})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# ------------------------------------------------------------------------ config


def _check_address(address: str, what: str) -> str:
    if not isinstance(address, str) or _CONTROL.search(address):
        raise ConfigError(f"{what} {address!r} contains control characters (CR/LF): refused")
    address = address.strip()
    _name, addr = parseaddr(address)
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@") or " " in addr:
        raise ConfigError(f"{what} {address!r} is not an e-mail address")
    return address


def _redact_url(url: str) -> str:
    """scheme://host[:port] only: webhook paths and queries usually carry a token."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True)
class NotifyConfig:
    """Where notices go. The default sends nothing (``enabled`` is False)."""

    recipients: tuple[str, ...] = ()
    sender: str = "levtrack@localhost"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    """Never from a file in the repository: an environment variable or a Prefect Secret
    block read by the caller. Kept out of ``repr``."""
    smtp_starttls: bool = False
    webhook_url: str | None = field(default=None, repr=False)
    """Kept out of ``repr``: webhook URLs usually embed a token."""
    timeout_seconds: float = 20.0

    def __post_init__(self) -> None:
        recipients = self.recipients
        if isinstance(recipients, str):
            recipients = tuple(r for r in recipients.split(","))
        recipients = tuple(_check_address(r, "recipient") for r in recipients if r and r.strip())
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "sender", _check_address(self.sender, "sender"))
        for name in ("smtp_host", "smtp_user", "webhook_url"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or _CONTROL.search(value)):
                raise ConfigError(f"notify setting {name} contains control characters: refused")
            if value is not None and not value.strip():
                object.__setattr__(self, name, None)
        if self.smtp_password is not None and not self.smtp_password:
            object.__setattr__(self, "smtp_password", None)
        if isinstance(self.smtp_port, bool) or not isinstance(self.smtp_port, int) \
                or not 1 <= self.smtp_port <= 65535:
            raise ConfigError(f"SMTP port must be an integer in 1..65535, not {self.smtp_port!r}")
        if not (isinstance(self.timeout_seconds, (int, float)) and self.timeout_seconds > 0):
            raise ConfigError(f"notify timeout must be a positive number of seconds, not {self.timeout_seconds!r}")
        if self.recipients and not self.smtp_host:
            raise ConfigError("notice recipients are configured (LEVTRACK_NOTIFY_TO) but no SMTP host "
                              "(LEVTRACK_SMTP_HOST): breach notices could not be sent")
        if self.smtp_host and not self.recipients:
            raise ConfigError("an SMTP host is configured (LEVTRACK_SMTP_HOST) but no recipients "
                              "(LEVTRACK_NOTIFY_TO)")
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ConfigError("SMTP user and password go together: set both LEVTRACK_SMTP_USER and "
                              "LEVTRACK_SMTP_PASSWORD, or neither")
        if self.webhook_url is not None:
            parts = urllib.parse.urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"webhook URL must be http(s)://host/..., not {_redact_url(self.webhook_url)}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "NotifyConfig":
        """Read ``LEVTRACK_NOTIFY_TO`` (comma-separated), ``LEVTRACK_NOTIFY_FROM``,
        ``LEVTRACK_SMTP_HOST``, ``LEVTRACK_SMTP_PORT``, ``LEVTRACK_SMTP_USER``,
        ``LEVTRACK_SMTP_PASSWORD``, ``LEVTRACK_SMTP_STARTTLS`` (1/true/yes/on or
        0/false/no/off) and ``LEVTRACK_WEBHOOK_URL``. Unset or empty means the default."""

        def get(name: str) -> str | None:
            value = environ.get(name)
            return value.strip() if value is not None and value.strip() else None

        kwargs: dict[str, Any] = {}
        to = get("LEVTRACK_NOTIFY_TO")
        if to:
            kwargs["recipients"] = tuple(r.strip() for r in to.split(",") if r.strip())
        if get("LEVTRACK_NOTIFY_FROM"):
            kwargs["sender"] = get("LEVTRACK_NOTIFY_FROM")
        kwargs["smtp_host"] = get("LEVTRACK_SMTP_HOST")
        port = get("LEVTRACK_SMTP_PORT")
        if port is not None:
            try:
                kwargs["smtp_port"] = int(port)
            except ValueError:
                raise ConfigError(f"LEVTRACK_SMTP_PORT must be an integer, not {port!r}") from None
        kwargs["smtp_user"] = get("LEVTRACK_SMTP_USER")
        # A password may legitimately start or end with spaces: not stripped.
        password = environ.get("LEVTRACK_SMTP_PASSWORD")
        kwargs["smtp_password"] = password if password else None
        starttls = (get("LEVTRACK_SMTP_STARTTLS") or "").lower()
        if starttls in _TRUE:
            kwargs["smtp_starttls"] = True
        elif starttls in _FALSE:
            kwargs["smtp_starttls"] = False
        else:
            raise ConfigError(f"LEVTRACK_SMTP_STARTTLS must be true or false, not {starttls!r}")
        kwargs["webhook_url"] = get("LEVTRACK_WEBHOOK_URL")
        return cls(**kwargs)

    @property
    def email_enabled(self) -> bool:
        return bool(self.recipients and self.smtp_host)

    @property
    def enabled(self) -> bool:
        """True when at least one channel (e-mail or webhook) is configured."""
        return self.email_enabled or self.webhook_url is not None


# ------------------------------------------------------------------------ notices


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str
    """Plain-text body."""
    html: str
    """HTML body; every value from the data is escaped."""
    payload: dict
    """JSON body for the webhook."""
    attachments: tuple[Path, ...] = ()


def _clean_header(text: str) -> str:
    """One line, no control characters: safe in a header."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", str(text))).strip()


def _flat(text: Any) -> str:
    """A data value for one line of the plain-text body."""
    return _clean_header(NA if text is None else text)


def _date_text(business_date: Any) -> str:
    if isinstance(business_date, datetime):
        return business_date.date().isoformat()
    if isinstance(business_date, date):
        return business_date.isoformat()
    return str(business_date)


def _as_date(business_date: Any) -> date | None:
    if isinstance(business_date, datetime):
        return business_date.date()
    if isinstance(business_date, date):
        return business_date
    try:
        return date.fromisoformat(str(business_date))
    except ValueError:
        return None


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fixed(value: float, decimals: int) -> str:
    d = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    if d == 0:
        d = abs(d)
    body = f"{abs(d):,.{decimals}f}"
    return MINUS + body if d < 0 else body


def fmt_money(value: Any) -> str:
    v = _finite(value)
    if v is None:
        return NA
    s = _fixed(v, 0)
    return MINUS + "$" + s[1:] if s.startswith(MINUS) else "$" + s


def fmt_fraction_pct(value: Any) -> str:
    v = _finite(value)
    return NA if v is None else _fixed(v * 100, 1) + " %"


def fmt_metric(value: Any, metric: str) -> str:
    """A metric's value or limit as people read it, by the metric's name."""
    v = _finite(value)
    if v is None:
        return NA
    if metric in _FRACTION_METRICS:
        return fmt_fraction_pct(v)
    if metric.endswith("_usd"):
        return fmt_money(v)
    if metric.endswith("_pct") or "_pct_" in metric:
        return _fixed(v, 2) + " %"
    if "leverage" in metric:
        return _fixed(v, 2) + TIMES
    if metric in _INTEGER_METRICS:
        return _fixed(v, 0)
    return _fixed(v, 2)


def _json_number(value: Any) -> float | None:
    return _finite(value)


_BREACH_COLUMNS = ("entity_id", "metric", "value", "limit", "kind", "utilization", "days_in_breach")


def _breach_rows(business_date: Any, utilization: pl.DataFrame, entities: pl.DataFrame) -> list[dict]:
    missing = [c for c in (*_BREACH_COLUMNS, "status") if c not in utilization.columns]
    if missing:
        raise ValueError(f"limit_utilization lacks column(s) {', '.join(missing)}")
    rows = utilization.filter(pl.col("status") == "breach")
    day = _as_date(business_date)
    if "business_date" in rows.columns and day is not None and rows.schema["business_date"] == pl.Date:
        rows = rows.filter(pl.col("business_date") == day)
    if rows.is_empty():
        return []
    if entities is not None and {"entity_id", "name"} <= set(entities.columns):
        names = entities.select(pl.col("entity_id").cast(pl.String), entity_name=pl.col("name").cast(pl.String)) \
            .unique("entity_id", keep="first")
        rows = rows.with_columns(pl.col("entity_id").cast(pl.String)).join(names, on="entity_id", how="left")
    else:
        rows = rows.with_columns(entity_name=pl.lit(None, pl.String))
    util = pl.col("utilization").cast(pl.Float64)
    rows = (
        rows.with_columns(_u=pl.when(util.is_nan() | util.is_infinite()).then(None).otherwise(util))
        .sort(["_u", "days_in_breach", "entity_id", "metric"],
              descending=[True, True, False, False], nulls_last=False)
    )
    return rows.select("entity_name", *_BREACH_COLUMNS).to_dicts()


def _entity_label(row: Mapping[str, Any]) -> str:
    name, eid = row.get("entity_name"), row.get("entity_id")
    if name is None or str(name).strip() == "" or str(name) == str(eid):
        return str(eid)
    return f"{name} ({eid})"


def _days_text(days: Any) -> str:
    d = _finite(days)
    if d is None:
        return NA
    n = int(d)
    return f"{n} day" if n == 1 else f"{n} days"


def _format_breach(row: Mapping[str, Any]) -> dict[str, str]:
    metric = str(row["metric"])
    return {
        "entity": _entity_label(row),
        "metric": metric,
        "value": fmt_metric(row["value"], metric),
        "limit": fmt_metric(row["limit"], metric),
        "kind": str(row["kind"]) if row["kind"] is not None else NA,
        "utilization": fmt_fraction_pct(row["utilization"]),
        "days_in_breach": _days_text(row["days_in_breach"]),
    }


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


_HTML_STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#111}"
    "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}"
    "td.n{text-align:right;white-space:nowrap}th{background:#eee}"
)


def breach_notice(business_date: Any, run_id: str, utilization: pl.DataFrame, entities: pl.DataFrame, *,
                  summary_pdf: Path | None, report_dir: Path | None) -> Notice | None:
    """The breach notice for one business date, or ``None`` when no limit is in breach.

    Names every breach — entity name and id, metric, value, limit, kind, utilization,
    days in breach — highest utilization first, and attaches the summary PDF when it
    exists (the body says so when it does not: the notice is never held back for it).
    """
    rows = _breach_rows(business_date, utilization, entities)
    if not rows:
        return None
    day = _date_text(business_date)
    run = _flat(run_id)
    formatted = [_format_breach(r) for r in rows]
    n_entities = len({r["entity_id"] for r in rows})
    headline = (f"{_plural(len(rows), 'limit breach', 'limit breaches')} at "
                f"{_plural(n_entities, 'entity', 'entities')}")
    subject = _clean_header(f"{SUBJECT_PREFIX} {day}: {headline}")

    attachments: tuple[Path, ...] = ()
    pdf_note = None
    if summary_pdf is not None:
        pdf = Path(summary_pdf)
        if pdf.is_file():
            attachments = (pdf,)
        else:
            pdf_note = f"The summary PDF was not found at {pdf}."

    # Plain text
    lines = [
        f"levtrack daily leverage report, business date {day}, run {run}.",
        f"{headline[0].upper()}{headline[1:]}, highest utilization first:",
        "",
    ]
    for i, f in enumerate(formatted, 1):
        lines.append(
            f"{i}. {_flat(f['entity'])}: {_flat(f['metric'])} {f['value']} against {f['kind']} limit "
            f"{f['limit']} (utilization {f['utilization']}, in breach {f['days_in_breach']})"
        )
    lines.append("")
    if attachments:
        lines.append(f"The compliance summary is attached ({attachments[0].name}).")
    if pdf_note:
        lines.append(pdf_note)
    if report_dir is not None:
        lines.append(f"Reports: {_flat(report_dir)}")
    text = "\n".join(lines) + "\n"

    # HTML
    e = _html.escape
    head = ("<tr><th>Entity</th><th>Metric</th><th>Value</th><th>Limit</th><th>Kind</th>"
            "<th>Utilization</th><th>Days in breach</th></tr>")
    body_rows = "".join(
        "<tr>"
        f"<td>{e(f['entity'])}</td><td>{e(f['metric'])}</td>"
        f"<td class=\"n\">{e(f['value'])}</td><td class=\"n\">{e(f['limit'])}</td>"
        f"<td>{e(f['kind'])}</td><td class=\"n\">{e(f['utilization'])}</td>"
        f"<td class=\"n\">{e(f['days_in_breach'])}</td>"
        "</tr>"
        for f in formatted
    )
    tail = []
    if attachments:
        tail.append(f"<p>The compliance summary is attached ({e(attachments[0].name)}).</p>")
    if pdf_note:
        tail.append(f"<p>{e(pdf_note)}</p>")
    if report_dir is not None:
        tail.append(f"<p>Reports: <code>{e(str(report_dir))}</code></p>")
    html = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>{e(subject)}</title><style>{_HTML_STYLE}</style></head><body>"
        f"<p>levtrack daily leverage report, business date <strong>{e(day)}</strong>, "
        f"run <code>{e(str(run_id))}</code>.</p>"
        f"<p><strong>{e(headline[0].upper() + headline[1:])}</strong>, highest utilization first:</p>"
        f"<table><thead>{head}</thead><tbody>{body_rows}</tbody></table>"
        f"{''.join(tail)}</body></html>"
    )

    payload = {
        "event": "limit_breach",
        "business_date": day,
        "run_id": str(run_id),
        "subject": subject,
        "text": text,
        "breach_count": len(rows),
        "entity_count": n_entities,
        "breaches": [
            {
                "entity_id": r["entity_id"],
                "entity_name": r["entity_name"],
                "metric": r["metric"],
                "value": _json_number(r["value"]),
                "limit": _json_number(r["limit"]),
                "kind": r["kind"],
                "utilization": _json_number(r["utilization"]),
                "days_in_breach": None if _finite(r["days_in_breach"]) is None else int(r["days_in_breach"]),
                "value_text": f["value"],
                "limit_text": f["limit"],
                "utilization_text": f["utilization"],
            }
            for r, f in zip(rows, formatted)
        ],
        "report_dir": None if report_dir is None else str(report_dir),
        "summary_pdf": attachments[0].name if attachments else None,
    }
    return Notice(subject=subject, text=text, html=html, payload=payload, attachments=attachments)


def failure_notice(business_date: Any, run_id: str, error: str) -> Notice:
    """The notice that the run for a business date failed, with the error message."""
    day = _date_text(business_date)
    run = _flat(run_id)
    subject = _clean_header(f"{SUBJECT_PREFIX} {day}: run FAILED")
    error_text = str(error).strip() or "(no error message)"
    text = (
        f"The levtrack daily run for business date {day} (run {run}) FAILED.\n"
        "The run did not complete: treat this date's limits as unchecked until a re-run succeeds.\n\n"
        f"Error:\n{error_text}\n"
    )
    e = _html.escape
    html = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>{e(subject)}</title><style>{_HTML_STYLE}</style></head><body>"
        f"<p>The levtrack daily run for business date <strong>{e(day)}</strong> "
        f"(run <code>{e(str(run_id))}</code>) <strong>FAILED</strong>.</p>"
        "<p>The run did not complete: treat this date's limits as unchecked until a re-run succeeds.</p>"
        f"<p>Error:</p><pre>{e(error_text)}</pre></body></html>"
    )
    payload = {
        "event": "run_failed",
        "business_date": day,
        "run_id": str(run_id),
        "subject": subject,
        "text": text,
        "error": error_text,
    }
    return Notice(subject=subject, text=text, html=html, payload=payload)


# ------------------------------------------------------------------------ sending


def _email_message(notice: Notice, config: NotifyConfig) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = _clean_header(notice.subject)
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.recipients)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    domain = config.sender.rpartition("@")[2].strip(" >") or "localhost"
    msg["Message-ID"] = make_msgid(domain=_clean_header(domain) or "localhost")
    msg.set_content(notice.text)
    msg.add_alternative(notice.html, subtype="html")
    for path in notice.attachments:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NotifyError(f"cannot read notice attachment {path}: {exc.strerror or exc}") from exc
        maintype, subtype = ("application", "pdf") if path.suffix.lower() == ".pdf" \
            else ("application", "octet-stream")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=_clean_header(path.name))
    return msg


def _send_email(notice: Notice, config: NotifyConfig) -> str:
    msg = _email_message(notice, config)
    where = f"SMTP server {config.smtp_host}:{config.smtp_port}"
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_seconds) as smtp:
            if config.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.smtp_user is not None:
                smtp.login(config.smtp_user, config.smtp_password or "")
            refused = smtp.send_message(msg, from_addr=parseaddr(config.sender)[1],
                                        to_addrs=[parseaddr(r)[1] for r in config.recipients])
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(f"{where} refused the login of user {config.smtp_user!r}: "
                          f"{exc.smtp_code} {_smtp_text(exc.smtp_error)}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyError(f"{where} refused every recipient: {_refused_text(exc.recipients)}") from exc
    except smtplib.SMTPResponseException as exc:
        raise NotifyError(f"{where} refused the notice: {exc.smtp_code} {_smtp_text(exc.smtp_error)}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timeout, TLS
        if isinstance(exc, TimeoutError):
            reason = f"timed out after {config.timeout_seconds:g} s"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = str(exc) or type(exc).__name__
        raise NotifyError(f"cannot send e-mail via {where}: {reason}") from exc
    if refused:
        raise NotifyError(f"{where} refused recipient(s) {_refused_text(refused)}; "
                          f"the others were sent the notice")
    return f"email:{_plural(len(config.recipients), 'recipient', 'recipients')}"


def _smtp_text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _clean_header(value)


def _refused_text(refused: Mapping[str, Any]) -> str:
    parts = []
    for addr, reply in refused.items():
        code, text = reply if isinstance(reply, tuple) and len(reply) == 2 else (None, reply)
        parts.append(f"{addr} ({code} {_smtp_text(text)})" if code else f"{addr} ({_smtp_text(text)})")
    return ", ".join(parts)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a body-less GET: treat it as a failure."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401, ANN001
        return None


def _send_webhook(notice: Notice, config: NotifyConfig) -> str:
    url = config.webhook_url
    shown = _redact_url(url)
    body = json.dumps(notice.payload, ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "levtrack-notify"},
    )
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=config.timeout_seconds) as response:
            status = response.status
            response.read()
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"webhook {shown} answered HTTP {exc.code} {_clean_header(exc.reason)}, "
                          "not 2xx") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise NotifyError(f"cannot reach webhook {shown}: {_clean_header(text)}") from exc
    except (OSError, ValueError) as exc:
        raise NotifyError(f"cannot post to webhook {shown}: {_clean_header(str(exc) or type(exc).__name__)}") from exc
    if not 200 <= status < 300:
        raise NotifyError(f"webhook {shown} answered HTTP {status}, not 2xx")
    return "webhook"


def send(notice: Notice, config: NotifyConfig) -> list[str]:
    """Send ``notice`` over every configured channel; return the channels used, e.g.
    ``["email:2 recipients", "webhook"]`` (``[]`` when nothing is configured).

    Every channel is tried even when an earlier one fails; then :class:`NotifyError`
    names every failure, and its ``sent`` lists the channels that did go out.
    """
    sent: list[str] = []
    failures: list[str] = []
    if config.email_enabled:
        try:
            sent.append(_send_email(notice, config))
        except NotifyError as exc:
            failures.append(str(exc))
    if config.webhook_url is not None:
        try:
            sent.append(_send_webhook(notice, config))
        except NotifyError as exc:
            failures.append(str(exc))
    if failures:
        also = f" (sent: {', '.join(sent)})" if sent else ""
        raise NotifyError("notice not delivered: " + "; ".join(failures) + also, sent=sent)
    return sent
