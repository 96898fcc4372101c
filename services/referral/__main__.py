from kim.service import run_service
from services.referral.bootstrap import create_app
from services.referral.settings import ReferralSettings

run_service("referral", create_app, ReferralSettings)
