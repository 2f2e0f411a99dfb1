"""Public request and response shapes (the REST contract of API.md), shared by API, CLI and MCP."""
