"""Property-based tests over blogctl's arguments: whatever a user types, the answer is the
created post printed literally, or one line of error and exit 1, never a traceback."""
from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.shared.events import TITLE_MAX
from tests.cli.conftest import Cli, InProcessBlog

ANY_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=TITLE_MAX + 20)
CLI_PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))


def printed_form(text: str) -> str:
    """How `render.safe` shows user text: control and format characters escaped, the rest as is."""
    from blogctl.render import safe

    return safe(text)


def unwrapped(printed: str) -> str:
    """Printed text without whitespace and table borders, so a title wrapped over lines reads whole."""
    return re.sub(r"[\s│┃]", "", printed)


@CLI_PROPERTIES
@given(title=ANY_TEXT)
def test_any_title_is_stored_as_given_or_refused_in_one_line(tmp_path_factory, title):
    cli = Cli(InProcessBlog(tmp_path_factory.mktemp("blog")))
    result = cli("post", "create", "--json", "--", title)  # "--": a title may start with "-"
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 0:
        post = json.loads(result.stdout)
        assert post["title"] == title
        listed = cli("post", "list").stdout
        assert unwrapped(printed_form(title)) in unwrapped(listed)  # however long: wrapped, never cut
        assert "\x1b" not in listed
    else:
        assert result.exit_code == 1 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: posts service refused")
        assert cli.json("post", "list") == {}


@CLI_PROPERTIES
@given(args=st.lists(st.sampled_from(
    ["post", "comment", "create", "list", "events", "--after", "--limit", "--type", "-1", "0", "x", "--json",
     "query", "kill", "start", "nobody", "--port", "posts=1", "--dead", "redeliver", "7"]), max_size=5))
def test_any_argument_list_ends_in_output_or_a_usage_error_never_a_traceback(tmp_path_factory, args):
    cli = Cli(InProcessBlog(tmp_path_factory.mktemp("blog")))
    result = cli(*args)
    assert result.exit_code in (0, 1, 2), (args, result.exception)
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 1:
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
