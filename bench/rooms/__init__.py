"""The venue-room benchmark (bench/run.py): its plan, client processes, scenarios and figures."""
