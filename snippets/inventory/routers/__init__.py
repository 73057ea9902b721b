"""HTTP routes: thin functions that map domain errors to status codes."""
