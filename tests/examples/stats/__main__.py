"""`python -m tests.examples.stats`: Stats served beside the formation's services, as its Procfile
line would run it (a service of the formation is in services/table.py: `run(SERVICE)` is enough)."""
from services.shared.main import run
from services.table import SERVICE_TABLE

from . import SERVICE

run(SERVICE, (*SERVICE_TABLE, SERVICE))
