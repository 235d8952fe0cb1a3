from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from inkwave import broker, vardir
from inkwave.logcontext import add_request_id_header, bind_task, unbind_task
from inkwave.process import runs_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
# Before any broker connection: redis:// URLs get the transport that survives a lost Redis.
broker.install()

app = Celery("inkwave")


@app.on_configure.connect
def prepare_var_dir(**kwargs: Any) -> None:
    """A worker or beat starting: create the var directory (and the embedded default's key).

    Sent as the configuration is first read, before Django's settings are imported, so they
    find the key. Only in Celery's own processes: any other imports this module (it comes
    with the `inkwave` package) and has prepared the directory itself, or must not write.
    """
    if runs_celery():
        vardir.prepare()


app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    """Keep Celery from replacing our structured logging with its own handlers."""
    from django.conf import settings

    from inkwave.logging import configure

    configure(settings.LOGGING)


@signals.before_task_publish.connect
def carry_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    add_request_id_header(headers)


@signals.task_prerun.connect
def bind_task_context(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    bind_task(task_id, getattr(task, "name", ""), getattr(task, "request", None))


@signals.task_postrun.connect
def unbind_task_context(**kwargs: Any) -> None:
    unbind_task()
