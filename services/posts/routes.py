"""Posts' routes: create and list posts; each new post's PostCreated leaves through the outbox."""
from __future__ import annotations

from flask import Flask, jsonify

from services.shared.openapi import Error, Operation
from services.shared.schemas import NewPost, Post
from services.shared.service import Built
from services.shared.web import parse

from .store import PostStore


def routes(app: Flask, built: Built[PostStore]) -> list[Operation]:
    store = built.store

    # `/posts/create` is the course's later name for it: an ingress cannot route by method.
    @app.post("/posts")
    @app.post("/posts/create")
    def create_post():
        post = store.create(parse(NewPost).title)
        built.notify()
        return jsonify(post), 201

    @app.get("/posts")
    def list_posts():
        return jsonify(store.all())

    return [
        Operation("post", "/posts", "Create a post", {201: Post, 400: Error}, body=NewPost),
        Operation("post", "/posts/create", "Create a post (the course's route behind its ingress)",
                  {201: Post, 400: Error}, body=NewPost),
        Operation("get", "/posts", "Every post, keyed by id", {200: dict[str, Post]}),
    ]
