"""The bus as a Flask app: its declaration, built; `delivery_options` reach each subscriber's
deliverer (tests pass a fake `client`, fewer `attempts`)."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from flask import Flask

from services import table
from services.shared.config import Config
from services.shared.service import build_service

from . import SERVICE
from .routes import open_bus


def create_app(config: Config | None = None, **delivery_options) -> Flask:
    return build_service(replace(SERVICE, store=partial(open_bus, **delivery_options)), config or table.load())
