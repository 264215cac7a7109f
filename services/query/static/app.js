// The blog page: the list reads the Query service with its ETag and `wait`, so Query holds the
// request until the view changes (a long poll: new posts show at once, an unchanged view costs
// a 304 every WAIT_S seconds); the forms write to the Posts and Comments services. User text only ever goes
// through textContent, so it is shown, never interpreted.
"use strict";

const app = document.getElementById("app");
// Behind the gateway the page has no ports: every request goes to its own origin.
const serviceUrl = (port) => (port ? `${location.protocol}//${location.hostname}:${port}` : location.origin);
const POSTS = serviceUrl(app.dataset.postsPort);
const COMMENTS = serviceUrl(app.dataset.commentsPort);
// Behind a front door a POST to /posts may reach Query (an ingress routes by path, not method):
// the course's /posts/create is Posts' everywhere.
const CREATE_POST = app.dataset.postsPort ? `${POSTS}/posts` : `${POSTS}/posts/create`;
const POLL_MS = 1000; // after an error, or when Query could not hold the request
const WAIT_S = 25;

const list = document.getElementById("posts");
const status = document.getElementById("status");
const postTemplate = document.getElementById("post-template");
const shown = new Map(); // post id -> its <li>
let etag = null;

function setStatus(text, state) {
  status.textContent = text;
  status.className = `status ${state}`;
}

function say(form, text, kind) {
  const message = form.querySelector(".form-message");
  message.textContent = text;
  message.className = `form-message ${kind}`;
}

function postElement(post) {
  const item = postTemplate.content.firstElementChild.cloneNode(true);
  item.dataset.postId = post.id;
  item.querySelector(".post-title").textContent = post.title;
  item.querySelector(".comment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit(event.currentTarget, `${COMMENTS}/posts/${encodeURIComponent(post.id)}/comments`, "content", "comments");
  });
  return item;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// As the course's client shows a comment: its text once approved, else what Moderation made of it.
const MODERATION_NOTES = {
  pending: "This comment is awaiting moderation",
  rejected: "This comment has been rejected",
};

function commentElement(comment) {
  const li = document.createElement("li");
  const status = comment.status || "approved";
  li.className = `comment ${status}`;
  li.dataset.status = status;
  li.textContent = MODERATION_NOTES[status] ?? comment.content;
  return li;
}

function render(posts) {
  // Posts are only ever added: keep existing elements (and anything typed in their forms).
  // Called only when Query's answer changed (a 200 after an ETag), so redrawing comments is cheap.
  let comments = 0;
  for (const post of Object.values(posts)) {
    let item = shown.get(post.id);
    if (!item) {
      item = postElement(post);
      shown.set(post.id, item);
      list.appendChild(item);
    }
    // A comment's status changes (pending, then approved or rejected): redraw the post's list.
    item.querySelector(".comments").replaceChildren(...post.comments.map(commentElement));
    comments += post.comments.length;
  }
  document.getElementById("counts").textContent = `(${plural(shown.size, "post")}, ${plural(comments, "comment")})`;
  document.getElementById("empty").hidden = shown.size > 0;
}

async function refresh() {
  const started = Date.now();
  let again = POLL_MS;
  try {
    const response = await fetch(`/posts?wait=${WAIT_S}`, { cache: "no-store", headers: etag ? { "If-None-Match": etag } : {} });
    // At once after a change, or after a full wait; a 304 that came back early was not held.
    again = response.status === 200 || Date.now() - started >= 1000 * (WAIT_S - 1) ? 0 : POLL_MS;
    if (response.status === 200) {
      etag = response.headers.get("ETag");
      render(await response.json());
    } else if (response.status !== 304) {
      throw new Error(`HTTP ${response.status}`);
    }
    setStatus(`Live: updated ${new Date().toLocaleTimeString()}`, "live");
  } catch (error) {
    setStatus("The query service is not answering; showing the last view, retrying…", "down");
  } finally {
    setTimeout(refresh, again);
  }
}

async function submit(form, url, field, service) {
  const input = form.elements[field];
  const button = form.querySelector("button");
  button.disabled = true;
  say(form, "", "");
  try {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ [field]: input.value }),
      });
    } catch (error) {
      say(form, `The ${service} service is not reachable: nothing was saved. Is it running? Try again when it is back.`, "error");
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      say(form, `Not saved: ${body.error || `the ${service} service answered ${response.status}`}`, "error");
      return;
    }
    input.value = "";
    say(form, "Saved. It appears below once the Query service has the event.", "ok");
  } finally {
    button.disabled = false;
  }
}

document.getElementById("post-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submit(event.currentTarget, CREATE_POST, "title", "posts");
});

refresh();
