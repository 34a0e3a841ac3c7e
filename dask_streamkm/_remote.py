"""Local paths and fsspec URLs behind one small interface (no data maths, no dask).

Every input and output of the library (data, labels, model files, checkpoint files, plots) may
be a local path or a URL of any fsspec filesystem (``s3://``, ``gs://``, ``az://``,
``https://``, ``memory://``, ``file://``). Credentials come from fsspec's usual chain
(environment, config files) or from ``storage_options``; they are never put into a message,
a file or a name: :func:`redact` removes them (from ``storage_options`` and from URLs) from any
text that leaves this library, and :func:`redact_options` from a repr.

Fingerprints (:func:`fingerprint`): what a chunked store's name and a checkpoint key hash so
that a rewritten store is noticed. Local files: every file's size and ``st_mtime_ns``.
Object stores: every object's size and version tag (ETag, version id, generation or
modification time, whichever the filesystem reports) from ONE recursive listing
(``fs.find(..., detail=True)``), never one request per chunk.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
import uuid

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# Listing fields that change when an object is rewritten, across fsspec filesystems
# (s3fs, gcsfs, adlfs, memory, local). Sizes are added separately.
_VERSION_FIELDS = (
    "ETag",
    "etag",
    "VersionId",
    "version_id",
    "generation",
    "md5Hash",
    "LastModified",
    "last_modified",
    "updated",
    "mtime",
    "created",
)


def is_url(spec):
    """True for ``scheme://...`` strings other than ``file://`` (those are local paths)."""
    return isinstance(spec, str) and bool(_URL.match(spec)) and not spec.startswith("file://")


def local_path(spec):
    """The local path of a path or ``file://`` URL (a str)."""
    spec = os.fspath(spec)
    if spec.startswith("file://"):
        spec = spec[len("file://") :]
    return spec


# Secrets in URLs: the ``user:password@`` part, and the values of query parameters that sign
# or authorize (S3 presigned ``X-Amz-Signature``, ``X-Amz-Credential``,
# ``X-Amz-Security-Token``; GCS ``X-Goog-Signature``; Azure SAS ``sig``; ``token=``,
# ``access_token=``, ``key=``...). A query separator may appear percent-encoded in a client's
# message (``%3F``, ``%26``, ``%3D``).
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^/@\s'\"]*@|[^/@\s'\"]*:[^@\s'\"]*@)")
_SECRET_NAME = r"[A-Za-z0-9_.\-]*(?:sig|signature|token|credential|key|secret|password|auth|sas)"
_SECRET_QUERY = re.compile(
    rf"((?:[?&;]|%3F|%26)(?:{_SECRET_NAME})[A-Za-z0-9_.\-]*(?:=|%3D))([^&;#\s'\"%]*"
    r"(?:%(?!26|3D)[0-9A-Fa-f]{2}[^&;#\s'\"%]*)*)",
    re.IGNORECASE,
)
# storage_options keys whose values are secrets (any nesting: ``client_kwargs``,
# ``credentials``, ``headers``): keys, secrets, tokens, passwords, credentials, SAS tokens,
# account keys, connection strings, authorization headers, cookies.
_SECRET_KEY = re.compile(
    r"key|secret|token|passw|credential|auth|sas|signature|cookie|connection_string|private",
    re.IGNORECASE,
)
_MASK = "***"


def display(url):
    """The URL, or every URL in a text, without its ``user:password@`` part and with the values
    of signing and authorizing query parameters replaced by ``***``, for messages."""
    text = _USERINFO.sub(r"\1", str(url))
    return _SECRET_QUERY.sub(lambda m: m.group(1) + _MASK if m.group(2) else m.group(0), text)


def first_line(exc):
    """The first line of an exception's message (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _url_secrets(text):
    """The secret parts of every URL in ``text``: user, password and signing query values."""
    out = []
    for match in _USERINFO.finditer(text):
        out.extend(p for p in re.split(r"[:@]", match.group(2)) if p)
    out.extend(m.group(2) for m in _SECRET_QUERY.finditer(text) if m.group(2))
    return out


def _walk(options, leaf, secret=False):
    """``options`` (storage options: dicts, lists and tuples at any nesting) rebuilt with
    ``leaf(value, secret)`` for each other value; ``secret``: it lies under a key that names a
    secret (:data:`_SECRET_KEY`)."""
    if isinstance(options, dict):
        return {
            k: _walk(v, leaf, secret or bool(_SECRET_KEY.search(str(k))))
            for k, v in options.items()
        }
    if isinstance(options, (list, tuple)):
        return type(options)(_walk(v, leaf, secret) for v in options)
    return leaf(options, secret)


def _option_secrets(storage_options):
    """The string values of ``storage_options`` under secret keys (any nesting), and the secret
    parts of URLs among the others."""
    out = []

    def collect(value, secret):
        if isinstance(value, str):
            out.extend([value] if secret else _url_secrets(value))

    _walk(storage_options, collect)
    return out


def redact_options(storage_options):
    """A copy of ``storage_options`` with every secret value (see :func:`redact`) replaced by
    ``***`` and every URL shown by :func:`display`, for reprs; None stays None."""

    def clean(value, secret):
        if secret and value is not None and not isinstance(value, bool):
            return _MASK
        return display(value) if isinstance(value, str) else value

    return _walk(storage_options, clean)


def redact(text, storage_options=None, urls=()):
    """``text`` on one line with every secret replaced by ``***``, for any message, warning or
    log line that leaves this library.

    Secrets: the string values of ``storage_options`` under keys that name a secret (key,
    secret, token, password, credentials, access keys, session and SAS tokens, account keys,
    connection strings, authorization headers; at any nesting, e.g. ``client_kwargs``), and
    the ``user:password@`` parts and signing query values (``X-Amz-Signature``,
    ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``sig``, ``token``...) of the URLs
    ``urls`` and of every URL in the text; each also as a client would quote it in a URL.
    """
    from urllib.parse import quote, quote_plus

    text = " ".join(str(text).split())
    secrets = set(_option_secrets(storage_options))
    for url in (*urls, text):
        secrets.update(_url_secrets(str(url)))
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, _MASK)
    return display(text)


def filesystem(url, storage_options=None):
    """``(fs, path)`` of a URL (fsspec picks the filesystem from the scheme)."""
    import fsspec.core

    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def join(directory, name):
    """``directory/name`` for a local path or a URL."""
    if is_url(directory):
        return posixpath.join(str(directory).rstrip("/"), name)
    return os.path.join(local_path(directory), name)


class DestinationNotFoundError(FileNotFoundError):
    """A file cannot be written because its bucket, container or directory does not exist."""


def read_bytes(url, storage_options=None):
    """The whole content of a file or object (OSError when it cannot be read)."""
    if is_url(url):
        fs, path = filesystem(url, storage_options)
        return fs.cat_file(path)
    with open(local_path(url), "rb") as fh:
        return fh.read()


def temp_name(name):
    """A fresh hidden name for a temporary copy of the file or store ``name`` (a base name):
    ``.NAME.HEX.tmp.EXT``, its extension kept (writers choose a format by it)."""
    stem, ext = os.path.splitext(name)
    return f".{stem}.{uuid.uuid4().hex}.tmp{ext}"


def local_temp(url, suffix=""):
    """A fresh local temporary file name for ``url`` (:func:`temp_name`; ``suffix`` when its
    name has no extension): next to ``url`` when it is local (so a rename is atomic), in the
    system's temporary directory otherwise."""
    folder = tempfile.gettempdir() if is_url(url) else os.path.dirname(local_path(url)) or "."
    name = os.path.basename(str(url).rstrip("/"))
    return os.path.join(folder, temp_name(name if os.path.splitext(name)[1] else name + suffix))


def _local_fingerprint(root):
    if os.path.isfile(root):
        st = os.stat(root)
        return [("", st.st_size, st.st_mtime_ns)]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            st = os.stat(full)
            out.append((os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
    return out


def _listing_fingerprint(fs, path):
    """Sizes and version fields of every object below ``path``, from one listing."""
    path = path.rstrip("/")
    fs.invalidate_cache(path)  # a listing cached by an earlier call would hide a rewrite
    if fs.isfile(path):
        infos = {path: fs.info(path)}
    else:
        try:
            infos = fs.find(path, detail=True)
        except Exception:  # filesystems that cannot list (plain HTTP servers)
            infos = {}
        if not infos:  # then only the metadata files' own tags can be seen
            infos = {}
            for name in ("zarr.json", ".zarray", ".zgroup"):
                try:
                    infos[f"{path}/{name}"] = fs.info(f"{path}/{name}")
                except Exception:
                    continue
    out = []
    for name in sorted(infos):
        info = infos[name]
        tags = tuple(str(info[f]) for f in _VERSION_FIELDS if info.get(f) is not None)
        out.append((name[len(path) :], info.get("size"), tags))
    return out


def fingerprint(url, storage_options=None, fs=None):
    """A list that changes whenever any file or object below ``url`` is rewritten.

    Local: per-file relative name, size and ``st_mtime_ns``. Other filesystems: per-object
    relative name, size and the version fields of one recursive listing. Filesystems that
    cannot list (plain HTTP) fall back to the listing of what they can see, which is
    documented as a limit.
    """
    if fs is None and not is_url(url):
        return _local_fingerprint(local_path(url))
    if fs is None:
        fs, path = filesystem(url, storage_options)
    else:
        path = url
    if getattr(fs, "protocol", None) in ("file", ("file", "local")) or type(fs).__name__ in (
        "LocalFileSystem",
    ):
        return _local_fingerprint(path)
    return _listing_fingerprint(fs, path)


def zarr_store_fingerprint(array):
    """Fingerprint of the objects of a ``zarr.Array`` opened by the caller (``da.from_zarr``).

    Returns None when the store is of a kind this does not know (then no fingerprint).
    """
    store = getattr(array, "store", None)
    subpath = getattr(array, "path", "") or ""
    root = getattr(store, "root", None)
    if root is not None:  # zarr.storage.LocalStore
        return _local_fingerprint(os.path.join(os.fspath(root), subpath))
    fs = getattr(store, "fs", None)
    if fs is None:
        return None
    sync_fs = getattr(fs, "sync_fs", None)  # fsspec's AsyncFileSystemWrapper
    if sync_fs is None:
        options = dict(getattr(fs, "storage_options", {}))
        options["asynchronous"] = False
        sync_fs = type(fs)(**options)
    base = posixpath.join(str(store.path).rstrip("/"), subpath) if subpath else str(store.path)
    return _listing_fingerprint(sync_fs, base)
