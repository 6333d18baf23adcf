"""The debugging read side: the JSON read API under /api/v1 and the server-rendered UI
under /ui (session timeline, issues, traces)."""
