"""`blogctl bench --only`: which scenarios run, in the order a full run takes them, with what they need."""
import pytest

from blogctl.bench.scenarios import SCENARIOS, chosen
from blogctl.errors import BlogctlError


def test_nothing_named_runs_every_scenario_in_order():
    assert chosen() == list(SCENARIOS)


def test_named_scenarios_run_in_the_full_runs_order_with_what_they_need():
    assert chosen(["rebuild", "publish"]) == ["publish", "rebuild"]
    assert chosen(["durability"]) == ["publish", "end-to-end", "durability"]
    assert chosen(["inline"]) == ["end-to-end", "inline"]


def test_an_unknown_scenario_is_refused_naming_the_known_ones():
    with pytest.raises(BlogctlError) as info:
        chosen(["publish", "everything"])
    assert "everything" in str(info.value) and "rebuild" in str(info.value)
