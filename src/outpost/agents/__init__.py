"""Agent adapters: how to start each agent CLI and how to read what it prints. No I/O of their own."""
