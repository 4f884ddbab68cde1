"""Who is calling: users and password hashes, rate-limited logins and sessions, roles and scope."""
