import sys

from kim.service import run_service
from services.gateway.bootstrap import create_app
from services.gateway.settings import GatewaySettings

# The dedup store runs in a worker thread, which waits for the busy event loop
# to hand over the GIL after each statement: every 5 ms by default, a delay
# that each group commit would pay several times.
sys.setswitchinterval(0.0005)
run_service("gateway", create_app, GatewaySettings)
