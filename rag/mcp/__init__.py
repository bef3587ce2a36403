"""The Model Context Protocol door: assistants (Claude Desktop, VS Code, Cursor...) reach the
indexes through MCP tools (`tools.py`), over stdio (`rag mcp`) or at `/mcp` on `rag serve`
(`server.py`). See docs/mcp.md."""
