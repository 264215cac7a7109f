from services.shared.main import run

from . import SERVICE

run(SERVICE)
