from kim.service import run_service
from kim.settings import KimSettings
from services.intake.bootstrap import create_app

run_service("intake", create_app, KimSettings)
