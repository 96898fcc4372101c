from kim.service import run_service
from services.gateway.bootstrap import create_app
from services.gateway.settings import GatewaySettings

run_service("gateway", create_app, GatewaySettings)
