"""What operators run: dead letters, review analytics and facility settings (one writer)."""
