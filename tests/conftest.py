"""Test-wide set-up: Prefect in a throw-away home with analytics off, one harness per session."""

import os
import tempfile

# Before anything imports Prefect or Great Expectations.
_HOME = tempfile.mkdtemp(prefix="levtrack-tests-prefect-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = os.path.join(os.path.dirname(__file__), "data", "prefect-logging.yml")

import email  # noqa: E402
import email.policy  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402



@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Inbox:
    """aiosmtpd handler that keeps every envelope it is handed."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd hook name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self):
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


@pytest.fixture
def smtp_server():
    """A local SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()
