"""The webhook intake HTTP service (SPEC §7, §12 ``appt-pipeline serve``).

``create_app(ServiceSettings(...))`` returns the FastAPI app; see :mod:`appt_pipeline.service.app`.
"""

from appt_pipeline.service.app import create_app, create_app_from_env
from appt_pipeline.service.settings import ServiceConfigError, ServiceSettings

__all__ = ["ServiceConfigError", "ServiceSettings", "create_app", "create_app_from_env"]
