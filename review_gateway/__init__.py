"""Review gateway: the HTTP/JSON edge of the review front end (auth, facility scoping)."""
