"""Domain pipelines built on the shared inner loop (plain Python, no Lightning)."""
