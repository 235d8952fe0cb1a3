"""The Slack outbox benchmark (bench/outbox.py, bench/flood.py): services, scenarios, report."""
