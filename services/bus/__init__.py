"""Event bus (:4005): logs every event durably, then delivers it to every subscriber's `POST /events`."""
from services.shared.service import Service

from .log import SCHEMA
from .routes import Bus, open_bus, routes

SERVICE = Service(
    "bus", 4005, title="Event bus", schema=SCHEMA, store=open_bus, routes=routes, health=Bus.health, bus=True,
)
