from octavia_runtime.server import run

from .server import SERVICE

run(SERVICE)
