"""The sandbox's local model hub: an HTTP server speaking the part of the Hugging Face Hub API and of ModelScope's API
that their own clients (huggingface_hub.snapshot_download, modelscope.snapshot_download) use, so that the models
stage is tested with the real clients while no hub is reachable from here. It serves directories of files as
repositories, each with one branch (`main` on the HF side, `master` on ModelScope's) and a commit id derived from its
files.

What it answers, and how the clients read it: tests/fixtures/models/NOTES-hubs.md (from the clients' source and from
runs of them against a stub). Hugging Face: GET /api/models/{id}[/revision/{rev}] (siblings with sizes, git blob ids
and LFS sha256), GET /api/models/{id}/tree/{rev} (recursive listing), HEAD|GET /{id}/resolve/{rev}/{path}
(X-Repo-Commit, ETag, Range -> 206), errors by X-Error-Code. ModelScope: GET /api/v1/models/{id}/repo/files,
GET /api/v1/models/{id}/repo?Revision=&FilePath= (Range -> 206), /revisions, /api/v1/models/{id}.

Fault switches for tests (<root>/faults.json, read on every request): `drop` {file, after, count} closes the
connection after `after` bytes of that file, `corrupt` {file, count} serves it with its bytes altered (same size),
`missing` [repo ids] answers 404, `slow` bytes per second for every body. Tokens (<root>/tokens.json, {repo id:
token}) gate repositories: without the token the hub answers 401. Every response is appended to <root>/access.log
(JSON lines: method, path, status, bytes sent): tests and benchmarks count the hub's bytes there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from . import registry

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack", ".model")
LFS_MIN_SIZE = 1024 * 1024
HF_BRANCH, MS_BRANCH = "main", "master"
CHUNK = 64 * 1024
_LOCK = threading.Lock()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """A directory served as a repository: its files with sizes and hashes, and a commit id over them."""

    def __init__(self, repo_id: str, directory: Path):
        self.repo_id, self.directory = repo_id, directory
        self.files: dict[str, dict] = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = path.relative_to(directory).as_posix()
            if rel.startswith(".") or "/." in rel:
                continue
            data = path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            entry = {"path": rel, "size": len(data), "sha256": sha256}
            if len(data) >= LFS_MIN_SIZE or rel.endswith(LFS_SUFFIXES):
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
                entry.update(lfs=True, blob=git_blob_sha1(pointer.encode()), pointer_size=len(pointer))
            else:
                entry.update(lfs=False, blob=git_blob_sha1(data))
            self.files[rel] = entry
        listing = "\n".join(f"{e['path']} {e['blob']}" for e in self.files.values())
        self.commit = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()

    def revision_ok(self, revision: str, branch: str) -> bool:
        return revision in (branch, self.commit)

    def etag(self, entry: dict) -> str:
        return entry["sha256"] if entry["lfs"] else entry["blob"]


class Hub:
    """The repositories under <root>/repos/<org>/<name> (directories or links to them), reloaded when they change."""

    def __init__(self, root: Path):
        self.root = root
        self._repos: dict[str, Repo] = {}
        self._stamp: dict[str, float] = {}

    def repo(self, repo_id: str) -> Repo | None:
        directory = self.root / "repos" / repo_id
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or not directory.is_dir():
            return None
        stamp = max((p.stat().st_mtime for p in directory.resolve().rglob("*")), default=0.0)
        with _LOCK:
            if self._stamp.get(repo_id) != stamp:
                self._repos[repo_id], self._stamp[repo_id] = Repo(repo_id, directory.resolve()), stamp
            return self._repos[repo_id]

    def faults(self) -> dict:
        try:
            return json.loads((self.root / "faults.json").read_text())
        except (OSError, ValueError):
            return {}

    def take_fault(self, kind: str, path: str) -> dict | None:
        """A fault of this kind for this file, counted down (a fault with count 0 is spent)."""
        with _LOCK:
            faults = self.faults()
            fault = faults.get(kind)
            if not fault or fault.get("file") != path or fault.get("count", 1) <= 0:
                return None
            fault["count"] = fault.get("count", 1) - 1
            (self.root / "faults.json").write_text(json.dumps(faults))
            return fault

    def token_for(self, repo_id: str) -> str | None:
        try:
            return json.loads((self.root / "tokens.json").read_text()).get(repo_id)
        except (OSError, ValueError):
            return None

    def log(self, record: dict) -> None:
        with _LOCK, open(self.root / "access.log", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, *args):  # the access log is ours (JSON lines)
        pass

    # --- plumbing -----------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # logged before the body goes: a client that has its answer finds the line there
        self.hub.log({"method": self.command, "path": self.path, "status": status, "bytes": 0 if head else len(body)})
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, value, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _hf_error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})},
                   head=self.command == "HEAD")

    def _authorized(self, repo: Repo) -> bool:
        wanted = self.hub.token_for(repo.repo_id)
        if not wanted:
            return True
        given = self.headers.get("Authorization", "")
        cookie = self.headers.get("Cookie", "")
        return given == f"Bearer {wanted}" or f"m_session_id={wanted}" in cookie

    def _file(self, repo: Repo, entry: dict, headers: dict, head: bool) -> None:
        """A file's bytes, honouring Range (206), with the drop / corrupt / slow faults."""
        data = (repo.directory / entry["path"]).read_bytes()
        start, status = 0, 200
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and int(match[1]) < len(data):
            start, status = int(match[1]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        elif match:
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            return
        body = data[start:]
        if not head and self.hub.take_fault("corrupt", entry["path"]):
            body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
        self.send_response(status)
        for key, value in {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            self.hub.log({"method": "HEAD", "path": self.path, "status": status, "bytes": 0})
            return
        drop = self.hub.take_fault("drop", entry["path"])
        rate = self.hub.faults().get("slow")
        if drop:
            body = body[:drop.get("after", 0)]
            self.close_connection = True
        # logged before the bytes go (what a dropped connection sends is known beforehand): a client that has its
        # file finds the line there
        self.hub.log({"method": "GET", "path": self.path, "status": status, "bytes": len(body),
                      "range": self.headers.get("Range"), "dropped": bool(drop)})
        for offset in range(0, len(body), CHUNK):
            self.wfile.write(body[offset:offset + CHUNK])
            if rate:
                time.sleep(CHUNK / float(rate))
        if drop:
            self.wfile.flush()
            self.connection.shutdown(2)

    # --- Hugging Face -----------------------------------------------------------------------------------------
    def _hf_repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repo(repo_id)
        if repo is None or repo_id in self.hub.faults().get("missing", []):
            self._hf_error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if not self._authorized(repo):
            self._hf_error(401, "GatedRepo", f"Access to model {repo_id} is restricted: pass a token")
            return None
        return repo

    def _hf_info(self, repo: Repo) -> dict:
        siblings = []
        for entry in repo.files.values():
            sibling = {"rfilename": entry["path"], "size": entry["size"], "blobId": entry["blob"]}
            if entry["lfs"]:
                sibling["lfs"] = {"sha256": entry["sha256"], "size": entry["size"],
                                  "pointerSize": entry["pointer_size"]}
            siblings.append(sibling)
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                "siblings": siblings}

    def _hf_api(self, parts: list[str]) -> None:
        # /api/models/{org}/{name}[/revision/{rev} | /tree/{rev}[/{path}]]
        repo = self._hf_repo("/".join(parts[:2]))
        if repo is None:
            return
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            revision = unquote(rest[1]) if len(rest) > 1 else HF_BRANCH
            if not repo.revision_ok(revision, HF_BRANCH):
                self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            self._json(200, self._hf_info(repo))
            return
        if rest[0] == "tree" and len(rest) >= 2:
            if not repo.revision_ok(unquote(rest[1]), HF_BRANCH):
                self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
                return
            prefix = "/".join(rest[2:])
            tree = []
            for entry in repo.files.values():
                if prefix and not entry["path"].startswith(prefix + "/"):
                    continue
                item = {"type": "file", "oid": entry["blob"], "size": entry["size"], "path": entry["path"]}
                if entry["lfs"]:
                    item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointer_size"]}
                tree.append(item)
            self._json(200, tree)
            return
        self._hf_error(404, "EntryNotFound", "unknown API path")

    def _hf_resolve(self, parts: list[str], head: bool) -> None:
        # /{org}/{name}/resolve/{rev}/{path...}
        repo = self._hf_repo("/".join(parts[:2]))
        if repo is None:
            return
        revision, path = unquote(parts[3]), unquote("/".join(parts[4:]))
        if not repo.revision_ok(revision, HF_BRANCH):
            self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        entry = repo.files.get(path)
        if entry is None:
            self._hf_error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.commit})
            return
        self._file(repo, entry, {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(entry)}"'}, head)

    # --- ModelScope -------------------------------------------------------------------------------------------
    def _ms_error(self, status: int, code: int, message: str) -> None:
        self._json(status, {"Code": code, "Message": message, "Success": False, "RequestId": "inferfleet-hub"})

    def _ms_api(self, parts: list[str], query: dict) -> None:
        # /api/v1/models/{org}/{name}[/repo/files | /repo | /revisions]
        repo_id = "/".join(parts[:2])
        repo = self.hub.repo(repo_id)
        if repo is None or repo_id in self.hub.faults().get("missing", []):
            self._ms_error(404, 10010205, "model not found")
            return
        if not self._authorized(repo):
            self._ms_error(401, 10010101, "Unauthorized: this model needs a token")
            return
        rest = parts[2:]
        revision = (query.get("Revision") or [MS_BRANCH])[0]
        ok = {"Code": 200, "Success": True, "Message": "success", "RequestId": "inferfleet-hub"}
        if not rest:
            self._json(200, {**ok, "Data": {"Path": parts[0], "Name": parts[1]}})
        elif rest == ["revisions"]:
            self._json(200, {**ok, "Data": {"RevisionMap": {
                "Branches": [{"Revision": MS_BRANCH, "CreatedAt": 1700000000}], "Tags": []}}})
        elif not repo.revision_ok(revision, MS_BRANCH):
            self._ms_error(404, 10010206, f"revision {revision} not found")
        elif rest == ["repo", "files"]:
            root = (query.get("Root") or [""])[0].strip("/")
            files, dirs = [], set()
            for entry in repo.files.values():
                if root and not entry["path"].startswith(root + "/"):
                    continue
                dirs.update("/".join(entry["path"].split("/")[:i]) for i in range(1, entry["path"].count("/") + 1))
                files.append({"Name": entry["path"].rsplit("/", 1)[-1], "Path": entry["path"], "Type": "blob",
                              "Size": entry["size"], "Sha256": entry["sha256"], "IsLFS": entry["lfs"],
                              "Revision": repo.commit})
            files += [{"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0} for d in sorted(dirs)]
            self._json(200, {**ok, "Data": {"Files": files}})
        elif rest == ["repo"]:
            path = (query.get("FilePath") or [""])[0]
            entry = repo.files.get(path)
            if entry is None:
                self._ms_error(404, 10010207, f"file {path} not found")
                return
            self._file(repo, entry, {}, head=self.command == "HEAD")
        else:
            self._ms_error(404, 10010208, "unknown API path")

    # --- dispatch -----------------------------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._hf_api(parts[2:])
        elif parts[:3] == ["api", "v1", "models"] and len(parts) >= 5:
            self._ms_api(parts[3:], query)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._hf_resolve(parts, head)
        else:  # /api/agent-harnesses, /api/v1/repos/internalAccelerationInfo: best-effort calls, absent here
            self._json(404, {"error": "not found"}, head=head)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._route(head=False)

    def do_HEAD(self):  # noqa: N802
        self._route(head=True)


def serve(root: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    root.mkdir(parents=True, exist_ok=True)
    (root / "repos").mkdir(exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"hub": Hub(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


MARKER = b"inferfleet.sandbox.hub"


def ensure(root: Path, port: int, known_pid: int | None, log=print) -> int:
    """Start the hub as its own process unless the one this sandbox started still runs; its pid."""
    import socket
    import subprocess

    if registry.alive(known_pid, MARKER):
        return known_pid
    root.mkdir(parents=True, exist_ok=True)
    log(f"starting the local model hub on 127.0.0.1:{port} (SIMULATED Hugging Face / ModelScope)")
    with open(root / "hub.out", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "inferfleet.sandbox.hub", "--root", str(root), "--port",
                                 str(port)], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc.pid
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local hub did not start on :{port}: "
                                   f"{(root / 'hub.out').read_text(errors='replace')[-1500:]}") from None
            time.sleep(0.1)


def stop(pid: int | None) -> bool:
    return registry.stop(pid, MARKER)


def publish(root: Path, repo_id: str, directory: Path) -> None:
    """Serve a directory as repository `repo_id` (a link: the hub reads the files where they are)."""
    link = root / "repos" / repo_id
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == directory.resolve():
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(directory.resolve())


def bytes_served(root: Path, since: int = 0) -> tuple[int, int]:
    """Body bytes the hub sent since line `since` of its access log, and the log's line count now."""
    try:
        lines = (root / "access.log").read_text().splitlines()
    except OSError:
        return 0, 0
    return sum(json.loads(line)["bytes"] for line in lines[since:]), len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferfleet.sandbox.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--port", type=int, default=5080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = serve(args.root, args.port, args.host)
    print(f"inferfleet sandbox hub (SIMULATED Hugging Face / ModelScope) on {args.host}:{args.port}, "
          f"repositories in {args.root / 'repos'}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())


