"""The browser-facing edge: the app's page, security headers, the access-log filter."""
