"""Output parsers: one per agent CLI, each turning the lines it prints into `outpost.agents.events`."""
