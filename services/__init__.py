"""The blog's four services: posts, comments, query and the event bus."""
