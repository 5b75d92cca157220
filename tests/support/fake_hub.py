"""A stand-in for the Hugging Face Hub on 127.0.0.1, for the real huggingface_hub client.

Set `HF_ENDPOINT` to `FakeHub.url` (huggingface_hub reads it when it is imported: run the code under
test in a subprocess) and the client talks to this server as it would to huggingface.co:

- repos live on disk, one folder each (`add_repo` copies one in); a repo's commit hash is derived
  from its content, so it is stable;
- `GET /api/models/{id}[/revision/{rev}]` (model_info; `?blobs=1` adds sizes, blob ids, LFS info),
  `GET /api/models/{id}/tree/{rev}[/{path}]` (list_repo_tree), `HEAD`/`GET /{id}/resolve/{rev}/{path}`
  (file metadata and content, with `Range: bytes=N-` answered 206, as resumed downloads ask);
- refusals as the Hub sends them: 404 + `X-Error-Code: RepoNotFound` / `RevisionNotFound` /
  `EntryNotFound`, 401 (no token) or 403 (a token without access) + `X-Error-Code: GatedRepo`
  on a gated repo's files and tree (its info stays public, `"gated": "manual"`),
  and 401 + `X-Error-Message: Invalid credentials in Authorization header` for an unknown token;
- `*.safetensors` files are served as LFS files (sha256 ETag), the rest as git blobs (sha1 ETag);
- writing, as `glance push` needs it: `POST /api/repos/create` (409 with the repo's url when it
  exists, as the Hub answers), `/api/validate-yaml` (a README's YAML front matter must parse),
  `/api/models/{id}/preupload/main` (every file "regular", so the client sends the content inside
  the commit request: no LFS or Xet storage) and `/api/models/{id}/commit/main` (ndjson: files
  written and `deletedFile`s removed, which `upload_folder(delete_patterns=...)` sends after listing
  the tree; applied whole or not at all); only tokens in `write_tokens` may write, others get 401
  (unknown) or 403 (read-only), as on the Hub;
- `requests` records every request (method, path, Range header) and `chunk_delay` slows the file
  bodies down, so a test can watch a progress bar or interrupt a download; `broken` drops the
  connection of a file's GET after its headers, as a Hub mid-outage.

Run alone: `python tests/support/fake_hub.py FOLDER REPO_ID [--gated]` serves FOLDER as REPO_ID.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 64 * 1024


@dataclass
class RepoFile:
    path: str
    data_path: Path
    size: int
    git_oid: str
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.git_oid

    def sibling(self, blobs: bool, claim_size: int | None = None) -> dict:
        entry: dict = {"rfilename": self.path}
        if blobs:
            size = claim_size if claim_size is not None and self.sha256 else self.size
            entry.update(size=size, blobId=self.git_oid)
            if self.sha256:
                entry["lfs"] = {"size": size, "sha256": self.sha256, "pointerSize": 134}
        return entry

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.sha256:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry


@dataclass
class Repo:
    repo_id: str
    folder: Path
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens with access to a gated repo
    claim_size: int | None = None  # model_info reports each LFS file this big (a model too large for the disk)
    files: dict[str, RepoFile] = field(default_factory=dict)
    sha: str = ""
    commits: int = 1  # how many commits made the repo what it is (its creation counts as one)
    private: bool = False

    def scan(self) -> None:
        """Read the files and derive the commit hash; call again after changing the folder."""
        files = {}
        commit = hashlib.sha1()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            rel = path.relative_to(self.folder).as_posix()
            data = path.read_bytes()
            git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            sha256 = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else None
            files[rel] = RepoFile(rel, path, len(data), git_oid, sha256)
            commit.update(f"{rel}:{git_oid}\n".encode())
        self.files, self.sha = files, commit.hexdigest()


class FakeHub:
    """The server; use as a context manager or call `start()` / `stop()`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()  # tokens the Hub knows; any other token is refused with 401
        self.write_tokens: set[str] = set()  # of those, the ones that may create repos and commit
        self.chunk_delay = 0.0
        self.broken: set[str] = set()  # file paths whose GET fails (HEAD still answers), as a Hub mid-outage
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def add_repo(
        self,
        repo_id: str,
        source: Path,
        *,
        gated: bool = False,
        granted: tuple[str, ...] = (),
        claim_size: int | None = None,
    ) -> Repo:
        folder = self.root / repo_id
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(source, folder)
        repo = Repo(repo_id, folder, gated=gated, granted=set(granted), claim_size=claim_size)
        repo.scan()
        self.repos[repo_id] = repo
        self.tokens.update(granted)
        return repo

    def add_token(self, token: str, *, write: bool = False) -> None:
        self.tokens.add(token)
        if write:
            self.write_tokens.add(token)

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The repo's current files (path -> content)."""
        return {path: entry.data_path.read_bytes() for path, entry in self.repos[repo_id].files.items()}

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Refusal(Exception):
    def __init__(self, status: int, code: str | None = None, message: str | None = None, body: dict | None = None):
        super().__init__(message or code or str(status))
        self.status, self.code, self.message, self.body = status, code, message, body or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.fake.requests.append({"method": "POST", "path": path, "range": None})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if path == "/api/repos/create":
                return self._create_repo(json.loads(body or b"{}"))
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body).get("content", ""))
            repo_id, _, action = path.removeprefix("/api/models/").rpartition("/")
            repo_id, _, kind = repo_id.rpartition("/")
            if path.startswith("/api/models/") and kind in ("preupload", "commit"):
                if action != "main":
                    raise _Refusal(400, message="the stand-in Hub commits to main only")
                repo = self._writable(repo_id)
                return self._preupload(repo, json.loads(body)) if kind == "preupload" else self._commit(repo, body)
            raise _Refusal(404, message="Not Found")
        except _Refusal as refusal:
            self._refuse(refusal, head=False)

    def _serve(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.fake.requests.append({"method": self.command, "path": path, "range": self.headers.get("Range")})
        try:
            if path.startswith("/api/models/"):
                self._api(path.removeprefix("/api/models/"), parse_qs(url.query), head)
            elif "/resolve/" in path:
                self._resolve(path.lstrip("/"), head)
            else:
                raise _Refusal(404, message="Not Found")
        except _Refusal as refusal:
            self._refuse(refusal, head)

    def _refuse(self, refusal: _Refusal, head: bool) -> None:
        body = json.dumps({"error": refusal.message or refusal.code or "error", **refusal.body}).encode()
        self.send_response(refusal.status)
        if refusal.code:
            self.send_header("X-Error-Code", refusal.code)
        if refusal.message:
            self.send_header("X-Error-Message", refusal.message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # --- writing ----------------------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None

    def _check_write(self) -> None:
        token = self._token()
        if token is None or token not in self.fake.tokens:
            raise _Refusal(401, message="Invalid username or password.")
        if token not in self.fake.write_tokens:
            raise _Refusal(403, message="You don't have the rights to create or write to this repository")

    def _writable(self, repo_id: str) -> Repo:
        self._check_write()
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            raise _Refusal(404, "RepoNotFound", "Repository not found")
        return repo

    def _create_repo(self, payload: dict) -> None:
        self._check_write()
        repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
        if repo_id in self.fake.repos:  # the Hub's 409 names the repo: create_repo(exist_ok=True) returns its url
            raise _Refusal(
                409, message="You already created this model repo", body={"url": f"{self.fake.url}/{repo_id}"}
            )
        folder = self.fake.root / repo_id
        folder.mkdir(parents=True)
        (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        repo = Repo(repo_id, folder, private=payload.get("visibility") == "private")
        repo.scan()
        self.fake.repos[repo_id] = repo
        self._json({"url": f"{self.fake.url}/{repo_id}", "name": repo_id}, head=False)

    def _validate_yaml(self, content: str) -> None:
        import yaml

        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            raise _Refusal(400, message=f"invalid YAML: {exc}") from None
        if not isinstance(metadata, dict):
            raise _Refusal(400, message="the metadata must be a mapping")
        self._json({"warnings": []}, head=False)

    def _preupload(self, repo: Repo, payload: dict) -> None:
        modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._json({"files": modes, "commitOid": repo.sha}, head=False)

    def _commit(self, repo: Repo, body: bytes) -> None:
        """Apply an ndjson commit as a whole: every operation is read and checked before a file changes."""
        writes: dict[str, bytes] = {}
        deletes: list[str] = []
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                writes[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                deletes.append(value["path"])
            elif item["key"] != "header":
                raise _Refusal(400, message=f"the stand-in Hub does not take {item['key']!r} operations")
        for path in deletes:
            (repo.folder / path).unlink(missing_ok=True)
        for path, data in writes.items():
            (repo.folder / path).parent.mkdir(parents=True, exist_ok=True)
            (repo.folder / path).write_bytes(data)
        repo.scan()
        repo.commits += 1
        url = f"{self.fake.url}/{repo.repo_id}/commit/{repo.sha}"
        self._json({"commitUrl": url, "commitOid": repo.sha, "pullRequestUrl": None}, head=False)

    # --- access rules, in the Hub's order: token, repo, gate, revision ---------------------------

    def _repo(self, repo_id: str, revision: str | None, *, files: bool = True) -> Repo:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if token is not None and token not in self.fake.tokens:
            raise _Refusal(401, message="Invalid credentials in Authorization header")
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            raise _Refusal(404, "RepoNotFound", "Repository not found")
        if files and repo.gated and token not in repo.granted:
            message = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            raise _Refusal(401 if token is None else 403, "GatedRepo", message)
        if revision is not None and revision not in ("main", repo.sha):
            raise _Refusal(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo

    def _api(self, rest: str, query: dict, head: bool) -> None:
        parts = rest.split("/")
        repo_id, tail = "/".join(parts[:2]), parts[2:]
        # Like the Hub, a gated repo's info (file list, sizes) is public; its files are not.
        if not tail:
            repo = self._repo(repo_id, None, files=False)
            return self._json(self._info(repo, query), head)
        if tail[0] == "revision" and len(tail) >= 2:
            repo = self._repo(repo_id, "/".join(tail[1:]), files=False)
            return self._json(self._info(repo, query), head)
        if tail[0] == "tree" and len(tail) >= 2:
            repo = self._repo(repo_id, tail[1])
            prefix = "/".join(tail[2:])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = [
                f.tree_entry()
                for f in repo.files.values()
                if (not prefix or f.path.startswith(prefix + "/"))
                and (recursive or "/" not in f.path.removeprefix(prefix + "/" if prefix else ""))
            ]
            return self._json(entries, head)
        raise _Refusal(404, message="Not Found")

    def _info(self, repo: Repo, query: dict) -> dict:
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        return {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["diffusers"],
            "siblings": [f.sibling(blobs, repo.claim_size) for f in repo.files.values()],
        }

    def _json(self, payload, head: bool) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _resolve(self, rest: str, head: bool) -> None:
        repo_part, _, tail = rest.partition("/resolve/")
        revision, _, file_path = tail.partition("/")
        repo = self._repo(repo_part, revision)
        entry = repo.files.get(file_path)
        if entry is None:
            raise _Refusal(404, "EntryNotFound", f"{file_path} does not exist")
        start, end = 0, entry.size - 1
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first or 0)
            end = int(last) if last else end
        partial = wanted is not None and (start, end) != (0, entry.size - 1)
        self.send_response(206 if partial else 200)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.end_headers()
        if head:
            return
        if file_path in self.fake.broken:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops before the first byte
            return
        with open(entry.data_path, "rb") as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(chunk)
                if self.fake.chunk_delay:
                    time.sleep(self.fake.chunk_delay)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve a folder as a Hub model repo on 127.0.0.1.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--gated", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("/tmp/fake-hub"))
    args = parser.parse_args()
    server = FakeHub(args.root)
    server.add_repo(args.repo_id, args.folder, gated=args.gated)
    server.start()
    print(server.url, flush=True)
    threading.Event().wait()
