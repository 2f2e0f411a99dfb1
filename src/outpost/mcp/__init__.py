"""MCP: the Outpost tools for AI clients, over stdio (`outpost mcp`) and streamable HTTP (`/mcp`)."""
