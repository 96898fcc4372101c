from kim.service import run_service
from kim.settings import KimSettings
from services.referral.bootstrap import create_app

run_service("referral", create_app, KimSettings)
