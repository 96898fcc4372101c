from kim.service import run_service
from kim.settings import KimSettings
from services.caseplan.bootstrap import create_app

run_service("caseplan", create_app, KimSettings)
