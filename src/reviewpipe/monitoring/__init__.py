"""Model Monitor, locally: baseline statistics (statistics.py), constraints and their checks
(constraints.py), drift metrics (drift.py), the HTML report (report.py), `reviewpipe monitor` (cli.py)."""
