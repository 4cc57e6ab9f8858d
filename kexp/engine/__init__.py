"""The training engine: the harness, its run session, input pipelines, callbacks, strategies and stops."""
