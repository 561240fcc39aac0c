"""``taskengine``: a command-line client of the Task Engine REST API."""
