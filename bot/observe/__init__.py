"""Watching the service: everything that reads decisions and never changes one.

`logs` (the one logging setup and every event name), `metrics` and `aggregates` (Prometheus and
/healthz), `status` and `status_page` with `charts` (the /status page), `notify` (sd_notify and the
decision-gated watchdog), `shadow` (every tier scored live) and `monitors` (shadow scoring and drift after
each bar close).
"""
