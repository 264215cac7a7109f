"""Comments service: stores comments per post and emits CommentCreated."""
