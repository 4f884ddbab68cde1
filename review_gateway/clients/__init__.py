"""The gateway's gRPC clients of the workflow, review and viewport services."""
