from kim.collector import fewer_collections
from kim.service import run_service
from services.reporting.bootstrap import create_app
from services.reporting.settings import ReportingSettings

fewer_collections()
run_service("reporting", create_app, ReportingSettings)
