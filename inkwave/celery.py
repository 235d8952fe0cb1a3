from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from inkwave import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
# Before any broker connection: redis:// URLs get the transport that survives a lost Redis.
broker.install()

app = Celery("inkwave")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    """Keep Celery from replacing our structured logging with its own handlers."""
    from django.conf import settings

    from inkwave.logging import configure

    configure(settings.LOGGING)
