"""Small helpers every step shares: user-facing errors and atomic file writes."""
