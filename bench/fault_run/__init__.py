"""The fault bench (bench/faults.py): its workload, observer, faults and verdicts."""
