"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints the real huggingface_hub client calls.

Set `HF_ENDPOINT` to `hub.url` (in a child process: huggingface_hub reads it at import time) and the
real client code runs against it. Repositories live in memory as commits of {path: bytes}; every
request is logged in `hub.requests` so tests can see what the client did.

Reading: repo info (`/api/models/{repo}/revision/{rev}`), the file tree, and `resolve` (HEAD and GET)
with the headers the client reads (X-Repo-Commit, ETag, Content-Length). Errors come with the
status and `X-Error-Code` the Hub sends: RepoNotFound, RevisionNotFound, GatedRepo.
Writing: repo creation, YAML validation of a README, pre-upload (every file "regular", so the client
sends the content inside the commit request: no LFS or Xet storage needed), branches and the commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

READ_TOKEN = "hf_read_token"
WRITE_TOKEN = "hf_write_token"


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> files
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
    private: bool = False
    gated: bool = False

    def resolve(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


def _commit_sha(parent: str | None, files: dict[str, bytes], message: str) -> str:
    digest = hashlib.sha1((parent or "").encode() + message.encode())
    for path in sorted(files):
        digest.update(path.encode() + hashlib.sha1(files[path]).digest())
    return digest.hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.tokens = {READ_TOKEN: "read", WRITE_TOKEN: "write"}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, gated: bool = False, message: str = "init") -> str:
        """Create `repo_id` with one commit on main holding `files`; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, Repo(gated=gated))
        return self._commit(repo, "main", files, message)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> str:
        parent = repo.refs.get(branch)
        sha = _commit_sha(parent, files, message)
        repo.commits[sha] = dict(files)
        repo.refs[branch] = sha
        return sha


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # --- plumbing ---

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            headers = {"Content-Length": len(body), **(headers or {})}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, data, headers: dict | None = None) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            body = b"" if head else json.dumps({"error": message}).encode()
            self._send(status, body, headers, head=head)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
            return token

        def _access(self, token: str | None) -> str | None:
            return hub.tokens.get(token) if token else None

        def _readable(self, repo_id: str, head: bool = False) -> Repo | None:
            """The repo, or None after answering with the error the Hub would send."""
            token = self._token()
            if token and self._access(token) is None:
                self._error(401, None, "Invalid credentials in Authorization header", head)
                return None
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and self._access(token) is None):
                self._error(404, "RepoNotFound", "Repository not found", head)
                return None
            if repo.gated and self._access(token) is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", head)
                return None
            return repo

        def _writable(self, repo_id: str | None = None) -> Repo | bool:
            token = self._token()
            access = self._access(token)
            if access is None:
                self._error(401, None, "Invalid username or password.")
                return False
            if access != "write":
                self._error(403, None, "You don't have the rights to create or write to this repository")
                return False
            if repo_id is None:
                return True
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return False
            return repo

        # --- routes ---

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            parsed = urlparse(self.path)
            path, query = unquote(parsed.path), parse_qs(parsed.query)
            hub.requests.append((method, path))
            routes = [
                ("POST", r"/api/repos/create", self._create_repo),
                ("POST", r"/api/validate-yaml", self._validate_yaml),
                ("GET", r"/api/whoami-v2", self._whoami),
                ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>.+)", self._preupload),
                ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>.+)", self._commit),
                ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>.+)", self._branch),
                ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>.+)", self._info),
                ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)", self._info),
                ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
                ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
                ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ]
            for verb, pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    return handler(method=method, query=query, **match.groupdict())
            self._error(404, None, f"no route for {method} {path}", head=method == "HEAD")

        def _whoami(self, **_) -> None:
            access = self._access(self._token())
            if access is None:
                return self._error(401, None, "Invalid user token.")
            self._json(200, {"type": "user", "name": "tester", "auth": {"accessToken": {"role": access}}})

        def _create_repo(self, **_) -> None:
            if not self._writable():
                return
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
            if repo_id in hub.repos:
                return self._error(409, None, "You already created this model repo")
            hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            hub._commit(hub.repos[repo_id], "main", {".gitattributes": b"*.safetensors filter=lfs\n"}, "init")
            self._json(200, {"url": f"{hub.url}/{repo_id}"})

        def _validate_yaml(self, **_) -> None:
            import yaml

            content = json.loads(self._body()).get("content", "")
            match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
            try:
                data = yaml.safe_load(match.group(1)) if match else None
            except yaml.YAMLError as exc:
                return self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
            if match and not isinstance(data, dict):
                return self._json(400, {"errors": [{"message": "metadata must be a mapping"}]})
            self._json(200, {"warnings": [] if match else [{"message": "empty or missing yaml metadata"}]})

        def _preupload(self, repo: str, rev: str, **_) -> None:
            if not self._writable(repo):
                return
            files = json.loads(self._body())["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
            self._json(200, {"files": modes, "commitOid": hub.repos[repo].refs.get(rev)})

        def _branch(self, repo: str, rev: str, **_) -> None:
            found = self._writable(repo)
            if not found:
                return
            if rev in found.refs:
                return self._error(409, None, f"Branch {rev} already exists")
            found.refs[rev] = found.refs["main"]
            self._json(200, {})

        def _commit(self, repo: str, rev: str, **_) -> None:
            found = self._writable(repo)
            if not found:
                return
            if rev not in found.refs:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = dict(found.commits[found.refs[rev]])
            summary = ""
            for line in self._body().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    summary = value["summary"]
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                else:
                    return self._error(400, None, f"the stand-in Hub does not take {item['key']!r} operations")
            sha = hub._commit(found, rev, files, summary)
            self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

        def _info(self, repo: str, rev: str = "main", **_) -> None:
            found = self._readable(repo)
            if found is None:
                return
            sha = found.resolve(rev)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            siblings = [{"rfilename": path, "size": len(data)} for path, data in sorted(found.commits[sha].items())]
            info = {"id": repo, "modelId": repo, "sha": sha, "private": found.private, "siblings": siblings}
            self._json(200, {**info, "gated": "auto" if found.gated else False, "disabled": False, "tags": []})

        def _tree(self, repo: str, rev: str, sub: str | None = None, query: dict | None = None, **_) -> None:
            found = self._readable(repo)
            if found is None:
                return
            sha = found.resolve(rev)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            prefix = f"{sub.rstrip('/')}/" if sub else ""
            entries = [
                {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}
                for path, data in sorted(found.commits[sha].items())
                if path.startswith(prefix)
            ]
            self._json(200, entries)

        def _resolve(self, method: str, repo: str, rev: str, file: str, **_) -> None:
            head = method == "HEAD"
            found = self._readable(repo, head)
            if found is None:
                return
            sha = found.resolve(rev)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            data = found.commits[sha].get(file)
            if data is None:
                return self._error(404, "EntryNotFound", f"{file} does not exist on {rev}", head)
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }
            status, body = 200, data
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged and not head:  # a resumed download asks for the rest
                start = int(ranged.group(1))
                status, body = 206, data[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            headers["Content-Length"] = len(data) if head else len(body)
            self._send(status, body, headers, head=head)

    return Handler
