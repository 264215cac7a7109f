"""Posts as a Flask app: its declaration, built (`python -m services.posts` serves it)."""
from services.table import app_factory

from . import SERVICE

create_app = app_factory(SERVICE)
