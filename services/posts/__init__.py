"""Posts service: stores posts and emits PostCreated."""
