from weftline.storage.queries import count_agent_events


def test_migrated_database_is_empty(ch):
    assert count_agent_events(ch) == 0
    tables = {
        r["name"]
        for r in ch.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", {"db": ch.database}
        )
    }
    assert {"agent_events", "spans", "schema_migrations"} <= tables
