from kim.service import run_service
from kim.settings import KimSettings
from services.gateway.bootstrap import create_app

run_service("gateway", create_app, KimSettings)
