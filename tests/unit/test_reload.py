"""Which services a changed file restarts under `blogctl up --reload`: from the service table."""
from __future__ import annotations

import importlib
from pathlib import Path

from blogctl.reload import changed_services
from services.table import SERVICE_TABLE, SERVICES

ROOT = Path("/src/services")


def test_each_declaration_is_the_package_named_after_it():
    # The mapping relies on it: services/<name>/ holds the code of the service declared as <name>.
    for spec in SERVICE_TABLE:
        assert importlib.import_module(f"services.{spec.name}").SERVICE is spec


def test_a_file_of_one_service_restarts_that_service_only():
    changed = changed_services([ROOT / "posts" / "store.py", ROOT / "posts" / "routes.py"], ROOT)
    assert changed == {"posts": ["services/posts/routes.py", "services/posts/store.py"]}
    assert changed_services([ROOT / "query" / "view.py", ROOT / "bus" / "log.py"], ROOT) == {
        "bus": ["services/bus/log.py"], "query": ["services/query/view.py"]}


def test_shared_code_and_the_table_restart_every_service():
    for shared in (ROOT / "shared" / "config.py", ROOT / "shared" / "transport" / "http.py", ROOT / "table.py"):
        changed = changed_services([shared], ROOT)
        assert set(changed) == set(SERVICES)
        assert changed["posts"] == [f"services/{shared.relative_to(ROOT)}"]


def test_files_outside_the_services_package_restart_nothing():
    assert changed_services([Path("/src/blogctl/cli.py"), Path("/elsewhere/posts/store.py")], ROOT) == {}
    assert changed_services([], ROOT) == {}
