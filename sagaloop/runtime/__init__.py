"""The workflow runtime: engine, workflow actors, context, rollback, timing."""
