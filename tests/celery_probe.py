"""The project's Celery app, telling what the settings made of the Celery process it runs in.

`celery -A tests.celery_probe report` prints one line `probe {...}` once Celery has read its
configuration (the Django settings), then its report; nothing here changes the app.
"""

from __future__ import annotations

import json
from typing import Any

from inkwave.celery import app

__all__ = ["app"]


@app.on_after_configure.connect
def _report_settings(**kwargs: Any) -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    key_file = settings.VAR_DIR / "secret_key"
    figures = {
        "pool": database["OPTIONS"].get("pool", {}).get("max_size"),
        "keyIsStored": key_file.exists() and key_file.read_text().strip() == settings.SECRET_KEY,
    }
    print("probe", json.dumps(figures), flush=True)
