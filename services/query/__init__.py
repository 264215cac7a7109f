"""Query service: the read model of posts with their comments."""
