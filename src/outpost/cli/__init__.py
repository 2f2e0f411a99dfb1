"""The `outpost` command line: server commands run locally; everything else talks to the REST API."""
