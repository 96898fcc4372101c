from kim.service import run_service
from services.referral.bootstrap import create_app
from services.referral.settings import ReferralSettings

if __name__ == "__main__":  # not in the worker process, which imports this module again
    run_service("referral", create_app, ReferralSettings)
