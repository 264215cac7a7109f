from services.shared.main import run

from .app import create_app

run("posts", create_app)
