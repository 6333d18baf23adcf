"""Grafana: the dashboards' generator, their checker (every panel query run on chDB), and
the ClickHouse macro expansion both share. The generated JSON and provisioning files live
beside this module and ship in the package."""
