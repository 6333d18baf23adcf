"""Alert rules written once (YAML under dashboards/alerts/), compiled to Grafana
provisioning and evaluated by Weftline's own leader-elected loop."""
