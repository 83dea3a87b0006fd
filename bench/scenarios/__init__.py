"""One module per scenario; each `run(ctx)` returns its section of the results."""
