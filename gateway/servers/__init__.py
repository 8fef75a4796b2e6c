"""Starting the server that speaks HTTP for each mode."""
