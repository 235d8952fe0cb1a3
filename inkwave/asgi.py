"""ASGI entry point: HTTP through Django, WebSockets through origin check, auth and routing."""

from __future__ import annotations

import gc
import os

import django

from inkwave import vardir

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
# A server starting: the var directory and the embedded default's key, before the settings.
vardir.prepare()
# Django must be set up before anything imports models (the consumers do); as
# get_asgi_application(), with a handler that reuses its requests' threads.
django.setup(set_prefix=False)

from inkwave.http_handler import PooledASGIHandler  # noqa: E402

django_asgi_app = PooledASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from inkwave.routing import build_websocket_application  # noqa: E402
from monitoring.flusher import start_flusher  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": build_websocket_application()}
)

# Each server process reports its own samples; the deployment's figures are their sum.
start_flusher(role="web")

# Everything loaded so far lives as long as the process: keep it out of the collector's
# full passes, which otherwise took 150-220 ms every second or so under load (bench/).
gc.collect()
gc.freeze()
