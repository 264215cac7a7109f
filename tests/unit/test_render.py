"""How blogctl renders a subscriber: its last error (failing now, or failed once and recovered), a group."""
import time

from blogctl.render import last_error, subscriber_name


def test_an_error_while_failing_is_red():
    shown = last_error({"last_error": "HTTP 500: boom", "failures": 3, "last_error_at": time.time()})
    assert shown.plain == "HTTP 500: boom" and "red" in str(shown.style)


def test_an_error_after_recovery_is_dim_and_dated():
    shown = last_error({"last_error": "connection refused", "failures": 0, "last_error_at": time.time() - 90})
    assert shown.plain.startswith("recovered; 1m") and shown.plain.endswith(": connection refused")
    assert "dim" in str(shown.style)


def test_no_error_is_a_dash():
    assert last_error({"failures": 0}).plain == "—"


def test_a_subscriber_group_shows_its_members_and_the_one_it_delivers_to():
    group = {"name": "comments", "url": "http://127.0.0.1:4101/events",
             "members": ["http://127.0.0.1:4001/events", "http://127.0.0.1:4101/events"]}
    assert subscriber_name(group).plain == "comments (2 members, now 127.0.0.1:4101)"
    assert subscriber_name({"name": "query", "url": "http://127.0.0.1:4002/events", "members": None}).plain == "query"
