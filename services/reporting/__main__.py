from kim.service import run_service
from kim.settings import KimSettings
from services.reporting.bootstrap import create_app

run_service("reporting", create_app, KimSettings)
