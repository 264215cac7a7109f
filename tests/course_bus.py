"""A stand-in for the course's own event bus (Node/Express), for testing our services in its formation.

What it does, as the course's bus does: keeps every event it is sent in an in-memory array
(whatever JSON the body holds, one entry per POST), answers `GET /events` with the whole array
(no ids, no sequence numbers, no paging), posts each event to every subscriber in turn without
retrying, has no `/health`, and refuses a body over 100 kB with 413 (Express's JSON limit).

    python -m tests.course_bus PORT SUBSCRIBER_URL...
"""
from __future__ import annotations

import logging
import queue
import sys
import threading

import requests
from flask import Flask, jsonify, request

BODY_LIMIT = 100 * 1024  # Express's default JSON body limit


def create_app(subscribers: list[str]) -> Flask:
    app = Flask("course_bus")
    app.config["MAX_CONTENT_LENGTH"] = BODY_LIMIT
    events: list = []
    outgoing: queue.Queue = queue.Queue()

    def deliver() -> None:
        while True:  # the process's life: it is a daemon thread
            event = outgoing.get()
            for url in subscribers:
                try:
                    requests.post(url, json=event, timeout=5)
                except requests.RequestException as exc:  # the course's bus logs and moves on
                    logging.warning("could not post to %s: %s", url, exc)

    threading.Thread(target=deliver, name="course-deliver", daemon=True).start()

    @app.post("/events")
    def publish():
        event = request.get_json(force=True)
        events.append(event)
        outgoing.put(event)
        return jsonify(status="OK")

    @app.get("/events")
    def log():
        return jsonify(events)

    return app


if __name__ == "__main__":
    from waitress import serve

    logging.basicConfig(level=logging.INFO)
    port, *urls = sys.argv[1:]
    serve(create_app(urls), host="127.0.0.1", port=int(port), threads=4)
