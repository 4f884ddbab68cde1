"""Mesh security: the private certificate authority, the identity a certificate names, mTLS
credentials for gRPC servers and clients, and the table of who may call which method."""
