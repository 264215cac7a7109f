"""The transport contract: one test class, run against every transport (see conftest.py).

What a service and a tool may count on, whichever transport carries the events: published
events are logged once each (by id), in order, with a sequence number, and read back from any
position; each consumer gets the types it asked for, in log order, again after it refused them,
and what waited for it while it was away; consumers under one name are a group taking each
event once, and when one goes the others take what follows; the log is read page by page; an event a consumer keeps
refusing is parked and sent again on request where the transport parks (else retried in place);
the transport describes itself, reports each consumer's backlog and can be reset.
"""
from __future__ import annotations

import pytest
import requests

from services.table import SERVICES
from services.shared.events import Event
from services.shared.transport import REGISTRY, UNKNOWN_SOURCE, RedeliveryRefused, TransportError
from tests.contract.conftest import NAMES
from tests.helpers import wait_until

TIMEOUT = 15
FIRST, SECOND = NAMES


def post(n: int) -> Event:
    return Event("PostCreated", {"id": f"p{n}", "title": f"post {n}"})


def comment(n: int) -> Event:
    return Event("CommentCreated", {"id": f"c{n}", "content": f"comment {n}", "postId": "p0"})


class TestTransportContract:
    def test_published_events_are_read_back_in_order_with_positions(self, carrier):
        publisher = carrier.transport("posts")
        events = [post(1), comment(1), post(2)]
        publisher.publish(events[:2])
        publisher.publish(events[2:])
        logged = publisher.read_log(after=0, limit=100)
        assert [(e.id, e.type, e.data) for e in logged] == [(e.id, e.type, e.data) for e in events]
        assert [e.seq for e in logged] == [1, 2, 3]

    def test_the_log_is_read_from_any_position_a_page_at_a_time(self, carrier):
        publisher = carrier.transport("posts")
        events = [post(n) for n in range(7)]
        publisher.publish(events)
        assert [e.id for e in publisher.read_log(after=4, limit=100)] == [e.id for e in events[4:]]
        assert [e.id for e in publisher.read_log(after=2, limit=2)] == [e.id for e in events[2:4]]
        assert publisher.read_log(after=7, limit=100) == []

    def test_iter_log_reads_the_log_to_its_end_a_page_at_a_time(self, carrier):
        publisher = carrier.transport("posts")
        events = [post(n) for n in range(7)]
        publisher.publish(events)
        pages = list(publisher.iter_log(page=3))
        assert [[e.id for e in page] for page in pages] == [[e.id for e in events[i:i + 3]] for i in (0, 3, 6)]
        assert [e.seq for page in pages for e in page] == list(range(1, 8))
        assert [[e.id for e in page] for page in publisher.iter_log(after=4)] == [[e.id for e in events[4:]]]
        assert [len(page) for page in publisher.iter_log(page=7)] == [7]  # a full last page, then nothing
        assert list(publisher.iter_log(after=7)) == []
        unread, late = publisher.iter_log(), post(7)
        publisher.publish([late])  # a page is read when asked for, not before
        assert [e.id for e in next(unread)][-1] == late.id

    def test_an_event_published_twice_is_logged_and_delivered_once(self, carrier):
        received, _ = carrier.consume(FIRST)
        publisher = carrier.transport("posts")
        once, other = post(1), post(2)
        publisher.publish([once])
        publisher.publish([once, other])  # a retry after a lost acknowledgement
        assert [e.id for e in publisher.read_log(after=0, limit=100)] == [once.id, other.id]
        wait_until(lambda: received.has([once.id, other.id]), timeout=TIMEOUT, message="both events delivered")
        assert received.ids() == [once.id, other.id]

    def test_an_events_trace_context_reaches_its_consumers_and_the_log(self, carrier):
        received, _ = carrier.consume(FIRST)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        traced = Event("PostCreated", {"id": "p1", "title": "t"}, traceparent=traceparent, tracestate="k=v")
        carrier.transport("posts").publish([traced, post(2)])
        wait_until(lambda: received.has([traced.id]), timeout=TIMEOUT, message="the traced event delivered")
        got = {e.id: (e.traceparent, e.tracestate) for e in received.events}
        assert got[traced.id] == (traceparent, "k=v")
        logged = {e.id: e.traceparent for e in carrier.transport().read_log(after=0, limit=10)}
        assert logged[traced.id] == traceparent

    def test_each_consumer_gets_the_types_it_asked_for_and_others_only_where_not_filtered(self, carrier):
        posts_only, _ = carrier.consume(FIRST, types=["PostCreated"])
        everything, _ = carrier.consume(SECOND)
        publisher = carrier.transport("posts")
        events = [post(1), comment(1), post(2), comment(2)]
        publisher.publish(events)
        wait_until(lambda: everything.has(e.id for e in events), timeout=TIMEOUT, message="every event delivered")
        wait_until(lambda: posts_only.has([events[0].id, events[2].id]), timeout=TIMEOUT, message="posts delivered")
        if publisher.describe().filters_by_type:
            assert {e.type for e in posts_only.events} == {"PostCreated"}
        else:  # every event is pushed; the service's handler table acknowledges what it does not take
            wait_until(lambda: posts_only.has(e.id for e in events), timeout=TIMEOUT, message="every event pushed")
            assert posts_only.ids() == [e.id for e in events]

    def test_each_consumer_gets_events_in_publish_order(self, carrier):
        first, _ = carrier.consume(FIRST)
        second, _ = carrier.consume(SECOND)
        publisher = carrier.transport("posts")
        events = [post(n) for n in range(60)]
        for start in range(0, 60, 7):
            publisher.publish(events[start:start + 7])
        expected = [e.id for e in events]
        for received in (first, second):
            wait_until(lambda: len(received.ids()) >= 60, timeout=TIMEOUT, message="all 60 delivered")
            assert received.ids() == expected

    def test_consumers_under_one_name_are_a_group_that_takes_each_event_once_and_loses_none_when_one_goes(
            self, carrier):
        """Replicas sharing one store consume under one name (`Config.subscription`): a broker's queue
        they compete on, one bus cursor with a member each."""
        first, first_transport = carrier.consume(FIRST)
        second, _ = carrier.consume(FIRST)
        publisher = carrier.transport("posts")
        before, after = [post(n) for n in range(40)], [post(n) for n in range(40, 80)]

        def taken() -> list[str]:
            return first.ids() + second.ids()

        for start in range(0, 40, 5):
            publisher.publish(before[start:start + 5])
        wait_until(lambda: set(taken()) >= {e.id for e in before}, timeout=TIMEOUT, message="the group to take 40")
        first_transport.close()  # a member goes: what follows reaches the one left
        for start in range(0, 40, 5):
            publisher.publish(after[start:start + 5])
        wait_until(lambda: second.has(e.id for e in after), timeout=TIMEOUT, message="the member left to take 40 more")
        assert sorted(taken()) == sorted(e.id for e in before + after)  # each event once, by one member
        assert not {e.id for e in after} & set(first.ids())

    def test_a_consumer_that_refuses_gets_the_events_again(self, carrier):
        received, _ = carrier.consume(FIRST)
        received.fail = 1
        publisher = carrier.transport("posts")
        events = [post(1), post(2)]
        publisher.publish(events[:1])
        publisher.publish(events[1:])  # the in-memory bus redelivers at its next delivery; the others on their own
        wait_until(lambda: received.has(e.id for e in events), timeout=TIMEOUT, message="both delivered after a refusal")
        assert received.refused == 1
        # Each once (a broker may hand over the next event while the refused one waits to come back).
        assert sorted(received.ids()) == sorted(e.id for e in events)

    def test_what_waited_for_a_consumer_away_is_its_backlog_and_reaches_it_when_back(self, carrier):
        _, away = carrier.consume(FIRST)
        away.close()
        publisher = carrier.transport("posts")
        publisher.publish([post(n) for n in range(3)])

        def waiting() -> int | None:
            return next((row["waiting"] for row in publisher.backlog() if row["name"].endswith(FIRST)), None)

        wait_until(lambda: waiting() == 3, timeout=TIMEOUT, message="a backlog of 3 for the consumer away")
        back, _ = carrier.consume(FIRST)
        wait_until(lambda: len(back.ids()) == 3, timeout=TIMEOUT, message="the backlog delivered")
        wait_until(lambda: waiting() == 0, timeout=TIMEOUT, message="an empty backlog")

    def test_an_event_a_consumer_keeps_refusing_is_parked_and_sent_again_where_the_transport_parks(self, carrier):
        received, _ = carrier.consume(FIRST)
        publisher = carrier.transport("posts")
        if not publisher.describe().dead_letters:  # it retries in place: nothing is ever parked
            assert publisher.dead_letters() == [] and publisher.dead_letters(FIRST) == []
            with pytest.raises(LookupError, match=f"no dead letter 1 for {FIRST}"):
                publisher.redeliver(FIRST, 1)
            return
        poison, after = post(1), post(2)
        received.poison = {poison.id}
        publisher.publish([poison, after])
        wait_until(lambda: publisher.dead_letters(), timeout=TIMEOUT, message="the refused event parked")
        wait_until(lambda: received.has([after.id]), timeout=TIMEOUT, message="the event after it delivered")
        [letter] = publisher.dead_letters(FIRST)
        assert (letter["subscriber"], letter["seq"], letter["event"]["id"]) == (FIRST, 1, poison.id)
        assert letter["attempts"] >= 1 and "500" in letter["error"]
        assert publisher.dead_letters(SECOND) == []
        with pytest.raises(LookupError):
            publisher.dead_letters("nobody")

        with pytest.raises(RedeliveryRefused, match="stays a dead letter"):
            publisher.redeliver(FIRST, 1)  # still refused
        assert len(publisher.dead_letters()) == 1
        received.poison = set()
        publisher.redeliver(FIRST, 1)
        assert received.ids() == [after.id, poison.id] and publisher.dead_letters() == []
        with pytest.raises(LookupError, match=f"no dead letter 1 for {FIRST}"):
            publisher.redeliver(FIRST, 1)

    def test_the_log_names_who_published_each_event_not_what_the_event_claims(self, carrier):
        claimed = Event("PostCreated", {"id": "p1", "title": "t"}, source="someone-else")
        carrier.transport("posts").publish([claimed])
        carrier.transport().publish([post(2)])  # a publisher that does not name itself
        assert [e.source for e in carrier.transport().read_log(after=0, limit=10)] == ["posts", UNKNOWN_SOURCE]

    def test_it_describes_itself_without_secrets(self, carrier):
        transport = carrier.transport()
        described = transport.describe()
        assert described.kind == type(transport).kind and described.name and described.log
        assert described.url.split(":", 1)[0] in REGISTRY
        assert ":guest@" not in described.url  # a password is never shown
        assert described.backlog_of in {"subscribers", "queues"}
        assert described.process is None or described.process in SERVICES  # a process of the formation's table
        assert isinstance(described.dead_letters, bool) and isinstance(described.filters_by_type, bool)

    def test_an_event_posted_to_its_publish_url_is_logged_where_it_has_one(self, carrier):
        transport = carrier.transport()
        url = transport.describe().publish_url
        if url is None:
            return  # nothing but its own clients publish to it
        answer = requests.post(url, json={"type": "PostCreated", "data": {"id": "p1", "title": "by wrk"}}, timeout=5)
        assert answer.status_code == 200
        assert [(e.type, e.data["title"]) for e in transport.read_log()] == [("PostCreated", "by wrk")]

    def test_reset_deletes_everything_it_holds(self, carrier):
        publisher = carrier.transport("posts")
        publisher.publish([post(1), post(2)])
        assert len(publisher.read_log(after=0, limit=10)) == 2
        publisher.reset()
        assert publisher.read_log(after=0, limit=10) == []
        publisher.publish([post(3)])
        assert [(e.data["id"], e.seq) for e in publisher.read_log(after=0, limit=10)] == [("p3", 1)]

    def test_a_transport_that_cannot_be_reached_says_so(self, carrier):
        nowhere = carrier.unreachable()
        for call in (lambda: nowhere.publish([post(1)]), lambda: nowhere.read_log(after=0, limit=10),
                     lambda: next(nowhere.iter_log()), nowhere.backlog):
            try:
                call()
            except TransportError as exc:
                assert str(exc)
            else:
                raise AssertionError(f"{call} did not raise TransportError")
