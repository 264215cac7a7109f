"""Comments' routes: comment on a post, list a post's comments; each new comment's CommentCreated
leaves through the outbox."""
from __future__ import annotations

from flask import Flask, jsonify

from services.shared.openapi import Error, Operation, Param
from services.shared.schemas import Comment, NewComment
from services.shared.service import Built
from services.shared.web import ApiError, parse

from .store import CommentStore, UnknownPost

POST_ID = Param("post_id", "path", {"type": "string"})


def routes(app: Flask, built: Built[CommentStore]) -> list[Operation]:
    store = built.store

    @app.post("/posts/<post_id>/comments")
    def create_comment(post_id: str):
        content = parse(NewComment).content
        try:
            comments = store.create(post_id, content)
        except UnknownPost:
            raise ApiError(404, f"post {post_id!r} is not known to the comments service") from None
        built.notify()
        return jsonify(comments), 201

    @app.get("/posts/<post_id>/comments")
    def list_comments(post_id: str):
        return jsonify(store.for_post(post_id))

    return [
        Operation("post", "/posts/{post_id}/comments", "Comment on a post", {201: list[Comment], 400: Error},
                  body=NewComment, params=(POST_ID,)),
        Operation("get", "/posts/{post_id}/comments", "A post's comments, oldest first", {200: list[Comment]},
                  params=(POST_ID,)),
    ]
