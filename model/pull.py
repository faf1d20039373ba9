"""``campfire model pull REPO [--file NAME.gguf]``: download a model from the Hugging Face Hub (or a
mirror: ``HF_ENDPOINT``) and prepare it for ``campfire serve``.

Through ``huggingface_hub`` (the Hub's own client: auth with ``HF_TOKEN``, redirects, retries,
``HF_HUB_OFFLINE``), with three things its ``hf_hub_download`` does not give:

- **resumable across runs**: each file is written to ``<file>.<checksum prefix>.part`` under
  ``<models_dir>/downloads/<owner>__<repo>/``; an interrupted download continues from where it
  stopped the next time (an HTTP Range request; ``hf_hub_download`` discards a partial file);
- **checked**: every file's SHA-256 is compared with the Hub's (the LFS ``oid`` of large files; the
  git blob id of small ones) and kept in the prepared folder's ``campfire-prepared.json``;
- **prepared**: a GGUF is converted by :func:`model.prepare.prepare_model` (bf16 safetensors; the
  marker records its name and languages); a transformers repo (``config.json`` + ``*.safetensors``)
  is assembled as is. The result lands in ``<models_dir>/<name>`` (written aside, then renamed).

A progress bar per file is huggingface_hub's (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it).
Hub calls: ``GET /api/models/{repo}/tree/{revision}?recursive=true``, then per file
``HEAD`` and ``GET /{repo}/resolve/{revision}/{path}`` (with ``Range`` when resuming).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from model.languages import card_languages, family_languages, normalise

log = logging.getLogger(__name__)

#: Files of a transformers repo that serving needs (top level only; no *.bin / ONNX / GGUF copies).
FOLDER_PATTERNS = (r".*\.json", r".*\.safetensors", r"tokenizer\.model", r"merges\.txt", r"vocab\.txt",
                   r".*\.jinja", r"README\.md", r".*\.tiktoken")
PREFERRED_GGUF = ("q4_k_m", "q4_0", "q5_k_m", "q8_0")  # llama.cpp's usual size/quality pick first
CHUNK = 1 << 20


class PullError(RuntimeError):
    """The download or preparation cannot go on; ``str()`` is one line saying why and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of the repo as the Hub's tree lists it."""

    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str  # git blob id (sha1 of "blob <size>\\0" + content)


@dataclass
class Pulled:
    """What ``pull_model`` made: ``folder`` (prepared), ``kind`` ("gguf" | "transformers"), ``name``,
    ``languages``, ``revision`` (commit), ``sha256`` {path: hex}, ``bytes`` downloaded this run."""

    folder: Path
    kind: str
    name: str
    languages: list[str]
    revision: str
    sha256: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def list_files(repo: str, *, revision: str = "main", endpoint: str | None = None, token: str | None = None) -> list[RemoteFile]:
    """The repo's files (recursive tree listing). Raises :class:`PullError` for an unknown repo or revision."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        tree = list(HfApi(endpoint=endpoint, token=token).list_repo_tree(repo, recursive=True, revision=revision))
    except RepositoryNotFoundError:
        raise PullError(f"no model repository {repo!r} on {endpoint or 'the Hub'} (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise PullError(f"{repo!r} has no revision {revision!r}") from None
    return [
        RemoteFile(f.path, int(f.size), f.lfs.sha256 if f.lfs else None, f.blob_id)
        for f in tree if hasattr(f, "blob_id")
    ]


def choose(files: list[RemoteFile], filename: str | None) -> tuple[str, list[RemoteFile]]:
    """``(kind, files to download)``: the named GGUF; else a transformers folder when the repo has
    ``config.json`` and safetensors; else its one GGUF, or the preferred quantisation
    (:data:`PREFERRED_GGUF`). Raises :class:`PullError` naming the choices when it cannot decide."""
    by_path = {f.path: f for f in files}
    ggufs = sorted(p for p in by_path if p.lower().endswith(".gguf"))
    if filename:
        if filename not in by_path:
            hint = f"; GGUF files there: {', '.join(ggufs[:8])}" if ggufs else ""
            raise PullError(f"the repository has no file {filename!r}{hint}")
        if not filename.lower().endswith(".gguf"):
            raise PullError("--file names a .gguf file; leave it out to download a transformers folder")
        return "gguf", [by_path[filename]]
    top = [p for p in by_path if "/" not in p]
    if "config.json" in top and any(p.endswith(".safetensors") for p in top):
        wanted = [by_path[p] for p in sorted(top) if any(re.fullmatch(pat, p) for pat in FOLDER_PATTERNS)]
        return "transformers", wanted
    single = [p for p in ggufs if not re.search(r"-\d{5}-of-\d{5}\.gguf$", p)]
    if len(single) == 1:
        return "gguf", [by_path[single[0]]]
    for quant in PREFERRED_GGUF:
        for p in single:
            if quant in p.lower():
                return "gguf", [by_path[p]]
    if single:
        raise PullError(f"several GGUF files: choose one with --file ({', '.join(single[:8])})")
    raise PullError("the repository has neither a single-file GGUF nor config.json with safetensors")


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at ``path`` (read in blocks). Raises OSError when it cannot be read."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(path: Path, remote: RemoteFile) -> str:
    """The file's SHA-256 after checking size and the Hub's checksum. Raises :class:`PullError`."""
    if path.stat().st_size != remote.size:
        raise PullError(f"{remote.path}: {path.stat().st_size} bytes, the Hub says {remote.size}")
    digest = sha256_file(path)
    ok = digest == remote.sha256 if remote.sha256 else _git_blob_sha1(path) == remote.blob_id
    if not ok:
        raise PullError(f"{remote.path}: checksum mismatch (corrupt download, deleted: run the command again)")
    return digest


def download(repo: str, remote: RemoteFile, folder: Path, *, revision: str, endpoint: str | None = None,
             token: str | None = None) -> tuple[Path, str, int]:
    """Download one file into ``folder`` (resuming its ``.part``), verify it (:func:`verify`).
    Returns ``(path, sha256, bytes fetched now)``; a file already there and intact costs no request."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    dest = folder / remote.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        try:
            return dest, verify(dest, remote), 0
        except PullError:
            dest.unlink()
    part = dest.with_name(f"{dest.name}.{(remote.sha256 or remote.blob_id)[:12]}.part")  # one per file version
    done = part.stat().st_size if part.is_file() else 0
    if done > remote.size:
        part.unlink()
        done = 0
    url = hf_hub_url(repo, remote.path, revision=revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    headers = build_hf_headers(token=token)
    if urlparse(meta.location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a CDN's signed URL: no Hub token
    if done < remote.size:
        with part.open("ab") as f:
            http_get(meta.location, f, resume_size=done, headers=headers, expected_size=remote.size,
                     displayed_filename=remote.path)
    try:
        digest = verify(part, remote)
    except PullError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest, digest, remote.size - done


def default_name(repo: str, kind: str, files: list[RemoteFile]) -> str:
    """Folder name under ``models_dir``: the GGUF's stem, or the repo's name, lower-cased."""
    base = Path(files[0].path).stem if kind == "gguf" else repo.split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-.") or "model"


def _assemble(source: Path, files: list[RemoteFile], target: Path, facts: dict[str, Any]) -> None:
    """A transformers folder at ``target`` from downloaded ``files`` (hard links, else copies), with the marker."""
    from model.prepare import is_prepared, write_marker

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        try:
            os.link(source / f.path, tmp / f.path)
        except OSError:
            shutil.copy2(source / f.path, tmp / f.path)
    if not is_prepared(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        raise PullError("the repository lacks config.json, *.safetensors or tokenizer_config.json: not servable")
    write_marker(tmp, **facts)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def pull_model(repo: str, models_dir: Path, *, filename: str | None = None, revision: str = "main",
               name: str | None = None, endpoint: str | None = None, token: str | None = None,
               force: bool = False) -> Pulled:
    """Download ``repo`` (a GGUF file or a transformers folder, :func:`choose`) into
    ``models_dir/downloads/`` and prepare it at ``models_dir/<name>``. ``endpoint``: the Hub's URL
    (default ``HF_ENDPOINT`` or huggingface.co); ``token``: default ``HF_TOKEN``. An existing prepared
    folder is kept unless ``force``. Raises :class:`PullError` (one line), huggingface_hub's
    ``OfflineModeIsEnabled`` (``HF_HUB_OFFLINE`` set) and its HTTP errors."""
    from model.prepare import is_prepared, prepare_model, read_marker

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", repo) or ".." in repo:
        raise PullError(f"{repo!r} is not a repository id (owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF)")
    kind, files = choose(list_files(repo, revision=revision, endpoint=endpoint, token=token), filename)
    source = Path(models_dir) / "downloads" / repo.replace("/", "__")
    pulled = Pulled(folder=Path(models_dir) / (name or default_name(repo, kind, files)), kind=kind, name=repo,
                    languages=[], revision=revision)
    for remote in files:
        path, digest, fetched = download(repo, remote, source, revision=revision, endpoint=endpoint, token=token)
        pulled.sha256[remote.path] = digest
        pulled.bytes += fetched
        log.info("downloaded %s (%d bytes, sha256 %s)", path, remote.size, digest)
    facts = {"source": f"{repo}@{revision}", "repo": repo, "revision": revision, "sha256": pulled.sha256}
    if kind == "gguf":
        prepare_model(pulled.folder, source / files[0].path, force=force, marker=facts)
    elif force or not is_prepared(pulled.folder):
        languages = normalise(card_languages(source) + family_languages(repo))
        _assemble(source, files, pulled.folder, {**facts, "name": repo, "languages": languages})
    marker = read_marker(pulled.folder)
    pulled.name = str(marker.get("name") or repo)
    pulled.languages = normalise(marker.get("languages") or [])
    return pulled
