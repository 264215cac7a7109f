"""What the services share: the event envelope, the transport seam, configuration, storage, web helpers."""
