from kim.service import run_service
from services.intake.bootstrap import create_app
from services.intake.settings import IntakeSettings

run_service("intake", create_app, IntakeSettings)
