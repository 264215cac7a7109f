import re
import sys
import unicodedata

import pytest

from services.shared.events import NOT_BLANK, CommentCreated, Event, InvalidEvent, PostCreated


def test_bare_course_event_gets_an_envelope():
    event = Event.from_dict({"type": "PostCreated", "data": {"id": "abc1", "title": "hi"}})
    assert event.id and event.time and event.seq is None
    assert event.payload().title == "hi"


def test_round_trip_keeps_every_field():
    event = Event.of(CommentCreated(id="c1", content="nice", postId="p1"))
    again = Event.from_dict(event.to_dict())
    assert again == event


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ([], "JSON object"),
        ({"data": {}}, "'type' is required"),
        ({"type": "", "data": {}}, "type"),
        ({"type": "PostCreated", "data": None}, "data: must be an object"),
        ({"type": "PostCreated", "data": {"id": "p1"}}, "'data.title' is required"),
        ({"type": "PostCreated", "data": {"id": "p1", "title": 7}}, "title"),
        ({"type": "PostCreated", "data": {"id": "p1", "title": "   "}}, "blank"),
        ({"type": "CommentCreated", "data": {"id": "c1", "content": "x"}}, "'data.postId' is required"),
        ({"type": "PostCreated", "data": {"id": "../etc", "title": "x"}}, "id"),
        ({"type": "PostCreated", "id": 5, "data": {"id": "p", "title": "x"}}, "id"),
    ],
)
def test_invalid_events_are_refused_with_a_reason(raw, fragment):
    with pytest.raises(InvalidEvent) as info:
        Event.from_dict(raw)
    assert fragment in str(info.value)


def test_unknown_types_are_carried_with_any_data():
    event = Event.from_dict({"type": "PostDeleted", "data": [1, 2]})
    assert event.payload() is None


def test_titles_are_kept_exactly_as_given():
    title = "  <script>alert(1)</script> [red]x[/red] \x1b[31m ü  "
    assert Event.from_dict(Event.of(PostCreated(id="p1", title=title)).to_dict()).payload().title == title


def test_a_declaration_gives_the_wire_model_the_factory_and_the_summary():
    from services.shared.events import SCHEMAS, WireEvent, summary
    from typing import get_args

    assert {"PostCreated", "CommentCreated"} <= set(SCHEMAS)
    assert set(get_args(WireEvent)) >= set(SCHEMAS.values())
    event = Event.of(PostCreated(id="p1", title="hi"), source="posts")
    assert event.to_dict()["data"] == {"id": "p1", "title": "hi"} and event.type == "PostCreated"
    assert summary("PostCreated", event.data) == "post p1: 'hi'"
    assert summary("PostCreated", {"id": "p1"}) is None and summary("Nope", {}) is None and summary(["x"], {}) is None
BLANKS = [chr(c) for c in range(sys.maxunicode + 1)
          if chr(c).isspace() or unicodedata.category(chr(c)) == "Cf"]


def test_the_blank_rule_is_white_space_and_invisible_format_characters():
    # The pattern is written out for a fast import: here it is derived again from unicodedata.
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    allowed = set(re.findall(NOT_BLANK, everything))
    assert set(everything) - allowed == set(BLANKS)


@pytest.mark.parametrize("field", ["title", "content"])
def test_a_text_of_only_blank_characters_is_refused_and_one_visible_character_is_enough(field):
    data = {"id": "x1", "postId": "p1"}
    kind = "PostCreated" if field == "title" else "CommentCreated"
    for blank in [*BLANKS, "\u3000\u00a0\u200b\u2028", " \ufeff\u2060 "]:
        with pytest.raises(InvalidEvent, match=f"{field}: must not be blank"):
            Event.from_dict({"type": kind, "data": {**data, field: blank}})
        assert getattr(Event.from_dict({"type": kind, "data": {**data, field: blank + "é"}}).payload(), field)
