"""Event bus: the durable event log and delivery to subscribers."""
