"""Monitoring of the recsys service: Prometheus rules, Alertmanager, Grafana dashboards as code,
their live checks and pictures, and the native monitoring stack (``make monitor``)."""
