"""Who is calling: signed session tokens, login and logout, the principal dependency."""
