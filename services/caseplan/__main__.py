from kim.service import run_service
from services.caseplan.bootstrap import create_app
from services.caseplan.settings import CaseplanSettings

run_service("caseplan", create_app, CaseplanSettings)
