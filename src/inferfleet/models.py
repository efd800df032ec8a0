"""Stage models, the controller's side: where each model comes from, and the fleet cache that holds it.

A model's source is written `hf://ORG/NAME[@REVISION]`, `modelscope://ORG/NAME[@REVISION]`, `git+https://HOST/PATH
[@REF]` (git-lfs) or `file:///DIR` (a directory on the controller). The controller fetches each one once per fleet,
with the hub's own client (huggingface_hub, modelscope, git-lfs), into its fleet cache: `<cache>/<scheme>/<name>/
<commit>/`, with a manifest beside it (`<commit>.json`: every file's size and sha256) and the commit each revision
named (`refs/<revision>`). The hosts then copy the verified directory from there (the models role: rsync through
ansible.posix.synchronize), so an N-host fleet takes each model from its hub once.

Resumable: a download goes into `<commit>.partial/` and is renamed only once every file matches the hub's sizes and
hashes (LFS sha256, git blob sha1 for small files on the Hugging Face side; sha256 on ModelScope's); a file that does
not match is fetched again. `inferfleet models pull` fills a cache (a bundle) on a connected machine; an offline
controller then serves it (inferfleet_models_offline).
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCHEMES = ("hf", "modelscope", "git", "file")
SOURCE_FORMS = "hf://ORG/NAME[@REVISION], modelscope://ORG/NAME[@REVISION], git+https://HOST/PATH[@REF] or " \
               "file:///DIR (a directory on the controller)"
MANIFEST = ".inferfleet-manifest.json"
# what the clients leave beside the model's files: not part of it, never copied to hosts
LOCAL_METADATA = (".cache", ".git", ".gitattributes", MANIFEST)
RETRIES = 3


class ModelError(Exception):
    """A model that cannot be fetched, with the fix."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class ModelRef:
    scheme: str  # hf, modelscope, git, file
    name: str  # ORG/NAME, the git URL, or the controller directory
    revision: str | None = None
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        prefix = {"hf": "hf://", "modelscope": "modelscope://", "git": "git+", "file": "file://"}[self.scheme]
        return prefix + self.name + (f"@{self.revision}" if self.revision else "")

    def cache_dir(self, cache_root: Path) -> Path:
        """Where the fleet cache keeps this model's revisions (patterns are part of what was fetched)."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "--", re.sub(r"^\w+://", "", self.name)).strip("-")
        patterns = ""
        if self.allow or self.ignore:
            patterns = "--" + hashlib.sha256(json.dumps([self.allow, self.ignore]).encode()).hexdigest()[:8]
        return cache_root / self.scheme / (name + patterns)

    def key(self) -> str:
        return json.dumps([self.scheme, self.name, self.revision, self.allow, self.ignore])


def parse_source(text: str, revision: str | None = None, allow=(), ignore=()) -> ModelRef:
    """A source as written in inferfleet_models; ValueError naming the accepted forms."""
    text = str(text).strip()
    match = re.fullmatch(r"(hf|modelscope)://([\w.-]+/[\w.-]+)(?:@([\w./-]+))?", text)
    if match:
        return ModelRef(match[1], match[2], revision or match[3], tuple(allow or ()), tuple(ignore or ()))
    match = re.fullmatch(r"git\+(https?://[^\s@]+?)(?:@([\w./-]+))?", text)
    if match:
        if allow or ignore:
            raise ValueError("a git source takes no allow_patterns or ignore_patterns (git-lfs clones the whole "
                             "repository)")
        return ModelRef("git", match[1], revision or match[2])
    match = re.fullmatch(r"file://(/\S*)", text)
    if match:
        return ModelRef("file", match[1].rstrip("/") or "/", None, tuple(allow or ()), tuple(ignore or ()))
    raise ValueError(f"is not a model source; write {SOURCE_FORMS}")


def catalogue_entry(value) -> ModelRef:
    """An inferfleet_models value: a controller directory (the older form) or {source, revision, patterns}."""
    if isinstance(value, str):
        return parse_source(value if "://" in value else f"file://{value}")
    return parse_source(value["source"], value.get("revision"), value.get("allow_patterns") or (),
                        value.get("ignore_patterns") or ())


# --- the fleet cache --------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(directory: Path) -> list[Path]:
    """The model's own files under a directory (the clients' and our metadata left out)."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in LOCAL_METADATA)
        found += [Path(root) / n for n in sorted(names) if n not in LOCAL_METADATA and not n.endswith(".incomplete")]
    return found


def wanted(path: str, ref: ModelRef) -> bool:
    """huggingface_hub's and modelscope's pattern rule: fnmatch on the path, allow first, then ignore."""
    if ref.allow and not any(fnmatch.fnmatchcase(path, p) for p in ref.allow):
        return False
    return not any(fnmatch.fnmatchcase(path, p) for p in ref.ignore)


def resolved_commit(ref: ModelRef, cache_root: Path) -> str | None:
    """The commit the cache holds for the ref's revision (offline)."""
    refs = ref.cache_dir(cache_root) / "refs" / (ref.revision or "default")
    return refs.read_text().strip() if refs.is_file() else None


def cached(ref: ModelRef, cache_root: Path, commit: str | None = None) -> tuple[Path, dict] | None:
    """The verified copy of the model in the cache and its manifest, if the cache has it (a stat per file)."""
    if ref.scheme == "file":
        return (Path(ref.name), {}) if Path(ref.name).is_dir() else None
    commit = commit or resolved_commit(ref, cache_root)
    if not commit:
        return None
    directory = ref.cache_dir(cache_root) / commit
    try:
        manifest = json.loads(directory.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    for entry in manifest["files"]:
        try:
            if (directory / entry["path"]).stat().st_size != entry["size"]:
                return None
        except OSError:
            return None
    return directory, manifest


def controller_copy(value, cache_root: Path) -> Path | None:
    """Where the controller holds a model (the fleet cache or its file:// directory), for the planner to read its
    config.json and weights; None when it holds none."""
    try:
        found = cached(catalogue_entry(value), cache_root)
    except (ValueError, KeyError, TypeError):
        return None
    return found[0] if found else None


# --- the hubs ---------------------------------------------------------------------------------------------------
@dataclass
class Remote:
    """A model as its hub describes it: the commit and each file with its expected size and hash."""
    commit: str
    files: list[dict] = field(default_factory=list)  # path, size, and sha256 and/or git blob sha1 (None: unknown)

    @property
    def size(self) -> int:
        return sum(f["size"] or 0 for f in self.files)


@contextlib.contextmanager
def _env(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    for key in [k for k, v in values.items() if v is None]:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hf_env(endpoint: str | None):
    return _env(HF_ENDPOINT=endpoint or os.environ.get("HF_ENDPOINT"), HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_DISABLE_PROGRESS_BARS="1")


def _ms_env(endpoint: str | None, token: str | None):
    return _env(MODELSCOPE_ENDPOINT=endpoint or os.environ.get("MODELSCOPE_ENDPOINT"),
                MODELSCOPE_API_TOKEN=token or os.environ.get("MODELSCOPE_API_TOKEN"),
                MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false")


def describe(ref: ModelRef, token: str | None = None, endpoint: str | None = None) -> Remote:
    """Ask the hub what the ref's revision is: its commit, files, sizes and hashes."""
    if ref.scheme == "hf":
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            with _hf_env(endpoint):
                info = HfApi(endpoint=endpoint or None, token=token or None).model_info(
                    ref.name, revision=ref.revision, files_metadata=True)
        except GatedRepoError:
            raise ModelError(f"{ref.source} needs a token the hub accepts", "set inferfleet_hf_token (keep it in "
                                                                            "an ansible-vault file)") from None
        except RevisionNotFoundError:
            raise ModelError(f"{ref.source}: the hub has no revision {ref.revision!r}",
                             "name a branch, tag or commit of the repository") from None
        except RepositoryNotFoundError:
            raise ModelError(f"{ref.source}: the hub has no such repository (or it needs a token)",
                             "check the name, or set inferfleet_hf_token") from None
        files = []
        for sibling in info.siblings or []:
            if not wanted(sibling.rfilename, ref):
                continue
            lfs = sibling.lfs
            files.append({"path": sibling.rfilename, "size": sibling.size,
                          "sha256": (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)),
                          "blob": None if lfs else sibling.blob_id})
        return Remote(info.sha, files)
    if ref.scheme == "modelscope":
        # modelscope's HubApi.get_model_files keeps only Path and Size: the listing with Sha256 and the commit
        # (Revision) comes from modelscope_hub's, which modelscope >= 1.38 delegates its hub calls to
        from modelscope_hub.api import HubApi

        try:
            with _ms_env(endpoint, token):
                api = HubApi(endpoint=endpoint or None, token=token or None)  # the default config is cached
                listing = api.legacy.list_repo_files(repo_id=ref.name, repo_type="model",
                                                     revision=ref.revision or "master", recursive=True)
        except Exception as err:  # the client raises requests' HTTPError with its own error as the cause
            status = getattr(getattr(err, "response", None), "status_code", None) or str(err)[:200]
            fix = "set inferfleet_modelscope_token" if "401" in str(status) else \
                "check the model id and revision on ModelScope"
            raise ModelError(f"{ref.source}: ModelScope answered {status}", fix) from None
        files = [{"path": f["Path"], "size": f.get("Size"), "sha256": f.get("Sha256"), "blob": None}
                 for f in listing if f.get("Type") != "tree" and wanted(f["Path"], ref)]
        commit = next((f.get("Revision") for f in listing if f.get("Revision")), None) or ref.revision or "master"
        return Remote(commit, files)
    if ref.scheme == "git":
        try:
            out = subprocess.run(["git", "ls-remote", ref.name, ref.revision or "HEAD"], capture_output=True,
                                 text=True, timeout=120, check=True).stdout.split()
        except (subprocess.SubprocessError, OSError) as err:
            raise ModelError(f"{ref.source}: git ls-remote failed: {getattr(err, 'stderr', '') or err}".strip(),
                             "check the URL, the ref and the controller's network") from None
        if not out:
            raise ModelError(f"{ref.source}: the repository has no ref {ref.revision!r}", "name a branch or tag")
        return Remote(out[0], [])
    raise ModelError(f"{ref.source}: nothing to describe", "")


def _download(ref: ModelRef, remote: Remote, target: Path, token: str | None, endpoint: str | None) -> None:
    """The hub's own client fills `target` (resuming what an earlier attempt left there)."""
    if ref.scheme == "hf":
        from huggingface_hub import snapshot_download

        with _hf_env(endpoint):
            snapshot_download(ref.name, revision=remote.commit, local_dir=str(target), token=token or None,
                              endpoint=endpoint or None, allow_patterns=list(ref.allow) or None,
                              ignore_patterns=list(ref.ignore) or None)
    elif ref.scheme == "modelscope":
        from modelscope import snapshot_download

        with _ms_env(endpoint, token):
            snapshot_download(ref.name, revision=ref.revision or "master", local_dir=str(target),
                              allow_patterns=list(ref.allow) or None, ignore_patterns=list(ref.ignore) or None,
                              token=token or None, endpoint=endpoint or None)
    elif ref.scheme == "git":
        if not (target / ".git").is_dir():
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["git", "clone", "--quiet", "--no-checkout", ref.name, str(target)], check=True,
                           capture_output=True, text=True, timeout=3600)
        subprocess.run(["git", "-C", str(target), "fetch", "--quiet", "--depth", "1", "origin", remote.commit],
                       check=True, capture_output=True, text=True, timeout=3600)
        subprocess.run(["git", "-C", str(target), "checkout", "--quiet", "--force", remote.commit], check=True,
                       capture_output=True, text=True, timeout=3600)
        subprocess.run(["git", "-C", str(target), "lfs", "pull"], check=True, capture_output=True, text=True,
                       timeout=3600)


def verify(directory: Path, remote: Remote) -> tuple[list[dict], list[str]]:
    """Every file hashed once: the manifest entries, and the files that do not match what the hub says (removed,
    with the client's record of them, so that the next attempt fetches them again)."""
    entries, bad = [], []
    expected = {f["path"]: f for f in remote.files}
    present = {p.relative_to(directory).as_posix(): p for p in model_files(directory)}
    for rel in sorted(set(expected) | set(present if not expected else ())):
        path, want = present.get(rel), expected.get(rel, {})
        if path is None:
            bad.append(f"{rel}: missing")
            continue
        size, sha256 = path.stat().st_size, sha256_of(path)
        reasons = []
        if want.get("size") is not None and size != want["size"]:
            reasons.append(f"{size} bytes, the hub says {want['size']}")
        if want.get("sha256") and sha256 != want["sha256"]:
            reasons.append("sha256 differs from the hub's")
        elif want.get("blob") and git_blob_sha1(path) != want["blob"]:
            reasons.append("git blob id differs from the hub's")
        if reasons:
            bad.append(f"{rel}: {', '.join(reasons)}")
            path.unlink()
            for meta in (directory / ".cache" / "huggingface" / "download").glob(f"{rel}.*"):
                meta.unlink()
            continue
        entries.append({"path": rel, "size": size, "sha256": sha256})
    return entries, bad


def disk_free(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def fetch(ref: ModelRef, cache_root: Path, token: str | None = None, endpoint: str | None = None,
          offline: bool = False, log=lambda *_: None) -> dict:
    """The model in the fleet cache, verified: its manifest, with `where` telling whether it came from the hub now
    or was in the cache already."""
    if ref.scheme == "file":
        directory = Path(ref.name)
        if not directory.is_dir():
            raise ModelError(f"{ref.source}: no such directory on the controller",
                             "give the controller directory that holds the model")
        files = [p for p in model_files(directory) if wanted(p.relative_to(directory).as_posix(), ref)]
        return {"source": ref.source, "commit": None, "directory": str(directory), "where": "controller directory",
                "files": file_manifest(directory, files), "size": sum(p.stat().st_size for p in files)}
    if offline:
        found = cached(ref, cache_root)
        if found is None:
            raise ModelError(f"{ref.source} is not in the fleet cache {cache_root} (offline: no hub is asked)",
                             "fill the cache on a connected machine: inferfleet models pull -i INVENTORY --bundle "
                             "DIR, and set inferfleet_model_cache_dir to it")
        return dict(found[1], directory=str(found[0]), where="fleet cache")
    remote = describe(ref, token, endpoint)
    found = cached(ref, cache_root, remote.commit)
    if found is not None:
        _record_ref(ref, cache_root, remote.commit)
        return dict(found[1], directory=str(found[0]), where="fleet cache")
    final = ref.cache_dir(cache_root) / remote.commit
    partial = final.with_name(final.name + ".partial")
    have = sum(p.stat().st_size for p in model_files(partial)) if partial.is_dir() else 0
    free = disk_free(final.parent)
    if remote.size - have > free:
        raise ModelError(f"{ref.source} needs {human_bytes(remote.size - have)} more on the controller; "
                         f"{final.parent} has {human_bytes(free)} free",
                         "free space there, or set inferfleet_model_cache_dir to a larger file system")
    log(f"fetching {ref.source} ({human_bytes(remote.size)}) into {partial}")
    bad: list[str] = []
    for _attempt in range(RETRIES):
        partial.mkdir(parents=True, exist_ok=True)
        try:
            _download(ref, remote, partial, token, endpoint)
        except subprocess.CalledProcessError as err:
            raise ModelError(f"{ref.source}: {' '.join(err.cmd[:3])} failed: {(err.stderr or '').strip()[-300:]}",
                             "check the URL and ref, and that git-lfs is installed on the controller") from None
        except Exception as err:
            raise ModelError(f"{ref.source}: the download failed: {type(err).__name__}: {str(err)[:300]}",
                             "check the hub's address (inferfleet_hf_endpoint / inferfleet_modelscope_endpoint) "
                             "and the controller's network, then run the stage again: it resumes") from None
        if ref.scheme == "git" and not remote.files:
            remote.files = [{"path": p.relative_to(partial).as_posix(), "size": p.stat().st_size, "sha256": None,
                             "blob": None} for p in model_files(partial)]
        entries, bad = verify(partial, remote)
        if not bad:
            break
        log(f"{ref.source}: fetching again what did not match: {'; '.join(bad)}")
    else:
        raise ModelError(f"{ref.source}: after {RETRIES} attempts these files still do not match the hub: "
                         f"{'; '.join(bad)}", "check the hub or mirror serving them")
    manifest = {"source": ref.source, "revision": ref.revision, "commit": remote.commit, "files": entries,
                "size": sum(e["size"] for e in entries),
                "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    final.with_suffix(".json").write_text(json.dumps(manifest, indent=2))
    _record_ref(ref, cache_root, remote.commit)
    return dict(manifest, directory=str(final), where="hub")


def planned(ref: ModelRef, cache_root: Path, token: str | None = None, endpoint: str | None = None,
            offline: bool = False) -> dict:
    """What `fetch` would bring, fetching nothing (check mode): the cache's manifest when it has the model, else
    the hub's description of it."""
    if ref.scheme == "file" or offline:
        return fetch(ref, cache_root, token, endpoint, offline)  # reads only what is on the controller
    remote = describe(ref, token, endpoint)
    found = cached(ref, cache_root, remote.commit)
    if found is not None:
        return dict(found[1], directory=str(found[0]), where="fleet cache")
    return {"source": ref.source, "revision": ref.revision, "commit": remote.commit, "size": remote.size,
            "files": [{"path": f["path"], "size": f["size"], "sha256": f.get("sha256")} for f in remote.files],
            "directory": str(ref.cache_dir(cache_root) / remote.commit), "where": "hub (check mode: not fetched)"}


def _record_ref(ref: ModelRef, cache_root: Path, commit: str) -> None:
    refs = ref.cache_dir(cache_root) / "refs" / (ref.revision or "default")
    refs.parent.mkdir(parents=True, exist_ok=True)
    refs.write_text(commit + "\n")


_FILE_HASHES: dict[tuple, str] = {}


def file_manifest(directory: Path, files: list[Path]) -> list[dict]:
    """Size and sha256 of a controller directory's files (hashed once per size and mtime)."""
    entries = []
    for path in files:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _FILE_HASHES:
            _FILE_HASHES[key] = sha256_of(path)
        entries.append({"path": path.relative_to(directory).as_posix(), "size": stat.st_size,
                        "sha256": _FILE_HASHES[key]})
    return entries


def human_bytes(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB" if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"


def default_cache() -> Path:
    from .paths import cache_dir

    return cache_dir() / "model-cache"
