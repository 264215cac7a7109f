from services.shared.main import run

from .app import create_app

run("bus", create_app)
