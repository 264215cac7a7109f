"""Moderation service: decides each comment and emits CommentModerated."""
from services.shared.main import run

from .app import create_app

run("moderation", create_app)
