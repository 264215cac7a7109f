"""Moderation service (:4003): decides each new comment and announces the decision."""
