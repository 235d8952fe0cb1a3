"""bench/alertmanager.py's pieces: Prometheus and Alertmanager as child processes, the
webhook receiver, what the application itself did, and the side-by-side verdicts."""
