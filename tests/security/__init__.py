"""Security tests on real servers: the mesh's refusals (who may not do what)."""
