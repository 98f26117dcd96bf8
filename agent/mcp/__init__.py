"""``docktor mcp``: a Model Context Protocol server in front of a running daemon."""
