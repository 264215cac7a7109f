import json
import threading
from dataclasses import dataclass, field

import pytest

from blogctl.polling import wait_until
from services.bus.delivery import Deliverer, DeliveryFailed
from services.bus.log import SCHEMA, EventLog, row_to_event, row_to_json
from services.shared.config import Subscriber
from services.shared.db import Database
from services.shared.events import Event, PostCreated
from services.shared.http import Unreachable


@pytest.fixture
def log(tmp_path):
    db = Database(tmp_path / "bus.db", SCHEMA)
    yield EventLog(db)
    db.close()


def test_append_numbers_events_in_order_and_ignores_a_known_id(log):
    first, second = Event.of(PostCreated(id="p1", title="a")), Event.of(PostCreated(id="p2", title="b"))
    assert [(a.seq, a.duplicate) for a in log.append([first, second])] == [(1, False), (2, False)]
    again = log.append([second, Event.of(PostCreated(id="p3", title="c"))])
    assert [(a.seq, a.duplicate) for a in again] == [(2, True), (3, False)]
    assert [row["seq"] for row in log.read_after(0)] == [1, 2, 3]


def test_reads_page_filter_and_survive_a_reopen(tmp_path):
    db = Database(tmp_path / "bus.db", SCHEMA)
    events = [Event.of(PostCreated(id=f"p{i}", title="t")) if i % 3 else Event("Other", i) for i in range(1, 1201)]
    EventLog(db).append(events)
    db.close()
    log = EventLog(Database(tmp_path / "bus.db", SCHEMA))
    assert [r["seq"] for r in log.read_after(1195)] == [1196, 1197, 1198, 1199, 1200]
    assert [r["seq"] for r in log.read_after(10, limit=3)] == [11, 12, 13]
    assert len(list(log.read_after(0))) == 1200  # across several pages
    others = list(log.read_after(0, type="Other"))
    assert len(others) == 400 and all(r["type"] == "Other" for r in others)
    assert log.last_seq() == 1200


def test_logged_rows_read_back_as_the_events_published(log):
    event = Event.of(PostCreated(id="p1", title='quote " and ü'))
    log.append([event])
    row = next(log.read_after(0))
    assert row_to_event(row) == Event(event.type, event.data, event.id, event.source, event.time, 1)
    assert json.loads(row_to_json(row)) == {**event.to_dict(), "seq": 1}


def test_cursors_persist_and_never_move_back(log):
    assert log.cursor("query") == 0
    log.advance("query", 5)
    log.advance("query", 3)
    assert log.cursor("query") == 5


@dataclass
class FakeResponse:
    status_code: int
    text: str = ""


@dataclass
class FakeSubscriber:
    """Stands in for a subscriber's HTTP endpoint: records bodies, answers from a script."""

    answers: list = field(default_factory=list)
    received: list = field(default_factory=list)

    def post(self, url, body, headers):
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if answer == 200:
            self.received.append(json.loads(body))
        return FakeResponse(answer, "boom")

    def close(self):
        pass


def test_delivery_sends_batches_in_order_and_moves_the_cursor_after_success(log):
    log.append([Event.of(PostCreated(id=f"p{i}", title="t")) for i in range(5)])
    fake = FakeSubscriber()
    deliverer = Deliverer(log, Subscriber("query", "http://q/events", batch=True), batch_size=2, client=fake)
    assert [deliverer.deliver_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [[e["seq"] for e in batch] for batch in fake.received] == [[1, 2], [3, 4], [5]]
    assert log.cursor("query") == 5


def test_a_failed_delivery_keeps_the_cursor_so_the_events_come_again(log):
    log.append([Event.of(PostCreated(id="p1", title="t"))])
    fake = FakeSubscriber(answers=[503, Unreachable("refused")])
    deliverer = Deliverer(log, Subscriber("posts", "http://p/events"), client=fake)
    for _ in range(2):
        with pytest.raises(DeliveryFailed):
            deliverer.deliver_once()
        assert log.cursor("posts") == 0
    assert deliverer.deliver_once() == 1
    assert fake.received[0]["data"] == {"id": "p1", "title": "t"}  # one event per POST, the course's shape
    assert log.cursor("posts") == 1


@dataclass
class FakeMembers:
    """A group's members behind one client: each URL up or down (unreachable), each batch taken recorded by URL."""

    down: set = field(default_factory=set)
    received: list = field(default_factory=list)  # (url, [seq, ...])

    def post(self, url, body, headers):
        if url in self.down:
            raise Unreachable(f"{url} refused")
        self.received.append((url, [e["seq"] for e in json.loads(body)]))
        return FakeResponse(200)

    def close(self):
        pass


def test_a_group_has_one_cursor_each_batch_goes_to_one_member_and_a_failed_member_hands_over(log):
    log.append([Event.of(PostCreated(id=f"p{i}", title="t")) for i in range(6)])
    members = FakeMembers()
    group = Subscriber("comments", "http://c1/events", batch=True, also=("http://c2/events",))
    deliverer = Deliverer(log, group, batch_size=2, client=members)
    assert deliverer.deliver_once() == 2
    members.down.add("http://c1/events")  # the member that took the first batch goes
    assert deliverer.deliver_once() == 2  # the same step hands the batch to the other one
    members.down.clear()
    assert deliverer.deliver_once() == 2  # which keeps the group's batches while it takes them
    assert members.received == [("http://c1/events", [1, 2]), ("http://c2/events", [3, 4]),
                                ("http://c2/events", [5, 6])]
    assert log.cursor("comments") == 6 and log.cursor("comments.2") == 0  # one cursor, the group's
    assert deliverer.status.url == "http://c2/events"
    assert deliverer.status.members == ["http://c1/events", "http://c2/events"]

    log.append([Event.of(PostCreated(id="p7", title="t"))])
    members.down.update(("http://c1/events", "http://c2/events"))
    with pytest.raises(DeliveryFailed, match=r"no member took it \(http://c2/events: .*refused; http://c1/events: .*refused\)"):
        deliverer.deliver_once()
    assert log.cursor("comments") == 6  # kept for the next attempt


def test_the_delivery_thread_retries_until_the_subscriber_takes_the_event(log):
    fake = FakeSubscriber(answers=[500, 500, 500])
    deliverer = Deliverer(log, Subscriber("query", "http://q/events"), max_backoff=0.05, client=fake)
    deliverer.start()
    try:
        log.append([Event.of(PostCreated(id="p1", title="t"))])
        done = threading.Event()
        for _ in range(200):
            if log.cursor("query") == 1:
                done.set()
                break
            done.wait(0.02)
        assert done.is_set()
        assert deliverer.status.last_error.startswith("HTTP 500")
        assert len(fake.received) == 1
    finally:
        deliverer.stop()


class PoisonSubscriber(FakeSubscriber):
    """Answers 500 to every delivery that contains the event with data id `poison`."""

    def __init__(self, poison: str):
        super().__init__()
        self.poison = poison
        self.rejected = 0

    def post(self, url, body, headers):
        events = json.loads(body)
        events = events if isinstance(events, list) else [events]
        if any(e["data"]["id"] == self.poison for e in events):
            self.rejected += 1
            return FakeResponse(500, "cannot apply")
        self.received.extend(events)
        return FakeResponse(200)


def drain(deliverer, limit=100):
    """Run the delivery loop's steps by hand: failures are retried at once."""
    for _ in range(limit):
        try:
            if deliverer.deliver_once() == 0:
                return
        except DeliveryFailed:
            continue
    raise AssertionError("delivery did not finish")


@pytest.mark.parametrize("batch", [True, False])
def test_an_event_rejected_again_and_again_is_parked_and_the_rest_flow_on(log, batch):
    log.append([Event.of(PostCreated(id=f"p{i}", title="t")) for i in range(1, 8)])
    fake = PoisonSubscriber("p4")
    deliverer = Deliverer(log, Subscriber("query", "http://q/events", batch=batch), batch_size=3, attempts=3, client=fake)
    drain(deliverer)
    assert [e["data"]["id"] for e in fake.received] == ["p1", "p2", "p3", "p5", "p6", "p7"]
    assert log.cursor("query") == 7
    [parked] = log.dead_letters("query")
    assert parked["seq"] == 4 and parked["attempts"] == 3 and "HTTP 500" in parked["error"]
    assert deliverer.status.dead_letters == 1


def test_a_parked_event_is_redelivered_on_request(log):
    log.append([Event.of(PostCreated(id="p1", title="t"))])
    fake = PoisonSubscriber("p1")
    deliverer = Deliverer(log, Subscriber("query", "http://q/events"), attempts=2, client=fake)
    drain(deliverer)
    assert len(log.dead_letters()) == 1
    with pytest.raises(DeliveryFailed):
        deliverer.redeliver(1)  # still refused: it stays parked
    assert len(log.dead_letters()) == 1
    fake.poison = "fixed now"
    deliverer.redeliver(1)
    assert log.dead_letters() == [] and deliverer.status.dead_letters == 0
    assert [e["data"]["id"] for e in fake.received] == ["p1"]
    with pytest.raises(LookupError):
        deliverer.redeliver(1)


def test_an_unreachable_subscriber_is_retried_not_parked(log):
    log.append([Event.of(PostCreated(id="p1", title="t"))])
    fake = FakeSubscriber(answers=[Unreachable("refused")] * 20)
    deliverer = Deliverer(log, Subscriber("query", "http://q/events"), attempts=2, client=fake)
    for _ in range(20):
        with pytest.raises(DeliveryFailed):
            deliverer.deliver_once()
    assert log.dead_letters() == [] and log.cursor("query") == 0
    assert deliverer.deliver_once() == 1


def test_a_log_made_before_sent_source_and_time_existed_gains_them(tmp_path):
    old_schema = SCHEMA.replace("    sent_source TEXT,", "").replace(
        "    data   TEXT NOT NULL,\n", "    data   TEXT NOT NULL\n").split("    sent_time   TEXT\n")
    db = Database(tmp_path / "bus.db", "".join(old_schema))
    assert "sent_source" not in {row["name"] for row in db.connection().execute("PRAGMA table_info(events)")}
    db.close()
    reopened = Database(tmp_path / "bus.db", SCHEMA)
    log = EventLog(reopened)
    log.append([Event.of(PostCreated(id="p1", title="a"))])
    assert json.loads(row_to_json(next(log.read_after(0))))["data"] == {"id": "p1", "title": "a"}
    reopened.close()


class OrderedSubscribers(FakeSubscriber):
    """Every subscriber's endpoint in one: records which one got each delivery, in order."""

    def post(self, url, body, headers):
        answer = super().post(url, body, headers)
        if answer.status_code == 200:
            self.received[-1] = (url, self.received[-1])
        return answer


def test_query_is_delivered_to_first_and_the_others_right_after(log):
    from services.bus.delivery import Delivery

    fake = OrderedSubscribers()
    subscribers = (Subscriber("posts", "http://p/events", batch=True), Subscriber("query", "http://q/events", batch=True),
                   Subscriber("comments", "http://c/events", batch=True))
    delivery = Delivery(log, subscribers, first=("query",), client=fake)
    assert list(delivery.deliverers) == ["posts", "query", "comments"]  # listed as configured
    delivery.start()
    try:
        log.append([Event.of(PostCreated(id="p1", title="t"))])
        wait_until(lambda: len(fake.received) == 3, timeout=10)  # every thread has started and is idle
        for round_ in range(2, 4):
            log.append([Event.of(PostCreated(id=f"p{round_}", title="t"))])
            wait_until(lambda: len(fake.received) == 3 * round_, timeout=10)
            assert fake.received[3 * (round_ - 1)][0] == "http://q/events"  # each event reached Query before the rest
    finally:
        delivery.stop()
    assert all(log.cursor(name) == 3 for name in ("posts", "query", "comments"))


def test_while_query_is_failing_the_others_are_not_held_back(log):
    from services.bus.delivery import Delivery

    fake = OrderedSubscribers()
    query_down = FakeSubscriber(answers=[Unreachable("refused")] * 1000)
    subscribers = (Subscriber("query", "http://q/events", batch=True), Subscriber("posts", "http://p/events", batch=True))
    delivery = Delivery(log, subscribers, first=("query",), client=fake, max_backoff=0.05)
    delivery.deliverers["query"].client = query_down
    delivery.start()
    try:
        log.append([Event.of(PostCreated(id="p1", title="t"))])
        wait_until(lambda: log.cursor("posts") == 1, timeout=5)
        wait_until(lambda: delivery.deliverers["query"].status.failures > 0, timeout=5)
        log.append([Event.of(PostCreated(id="p2", title="t"))])
        wait_until(lambda: log.cursor("posts") == 2, timeout=0.9)  # woken by the append, not its 1 s idle look
    finally:
        delivery.stop()
    assert log.cursor("query") == 0
