"""The `tuneloop` command line: parse, call the service, render. Only this package prints."""
