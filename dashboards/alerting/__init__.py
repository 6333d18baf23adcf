"""Alert rules written once (YAML under dashboards/alerting/rules/), compiled to Grafana
provisioning and evaluated by Weftline's own leader-elected loop."""
