"""The shapes of requests and answers on the wire: they validate requests and write the OpenAPI documents."""
from __future__ import annotations

from pydantic import BaseModel

from .events import Content, Status, Strict, Title


class NewPost(Strict):
    title: Title


class NewComment(Strict):
    content: Content


class Post(BaseModel):
    id: str
    title: str


class Comment(BaseModel):
    id: str
    content: str
    status: Status


class PostWithComments(Post):
    comments: list[Comment]
