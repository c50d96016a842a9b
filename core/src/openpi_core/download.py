"""Fetch checkpoints and assets by URL into a local cache, once.

Sources:

* a local path: returned as it is (resolved); nothing is copied.
* ``file://`` URL: a file or a directory, copied into the cache like a download.
* ``http://`` / ``https://``: one file, streamed with :mod:`urllib`.
* ``gs://bucket/path``: with ``gcsfs`` installed (``pip install gcsfs``), through
  fsspec, files and directories alike. Without it, a single public object is fetched
  from ``https://storage.googleapis.com/bucket/path``; plain HTTPS cannot list a
  directory (openpi's checkpoints are directories), so that case asks for gcsfs.
* ``hf://<org>/<repo>[@<revision>]/<path>``: one file of a Hugging Face Hub
  repository, fetched from ``https://huggingface.co/<org>/<repo>/resolve/<revision or
  main>/<path>`` (:func:`hf_to_https`) and cached under that URL's layout.

When a fetch fails, the error names the URL and the exact cache path where the file
can be placed by hand; a file found there is used without fetching. When the host
cannot be reached at all (no network, a failed name lookup, a refused or timed-out
connection), the error (:class:`UnreachableError`) says so first.

The cache lives in ``$OPENPI_DATA_HOME``, else ``~/.cache/openpi``, laid out as
``<cache>/<host or bucket>/<path>`` like openpi's own, so an existing openpi cache is
reused. Each download goes to ``<target>.partial`` and is renamed into place when
complete, under an exclusive lock on ``<target>.lock``, so concurrent processes
download once and readers never see a partial file. (Locks use ``fcntl``; where it is
missing, as on Windows, concurrent downloads are not serialised.)
"""

import contextlib
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from openpi_core.errors import OpenpiError

CACHE_ENV = "OPENPI_DATA_HOME"
DEFAULT_CACHE_DIR = "~/.cache/openpi"
GCS_HTTPS_ENDPOINT = "https://storage.googleapis.com"
HF_HTTPS_ENDPOINT = "https://huggingface.co"
HF_DEFAULT_REVISION = "main"
URL_SCHEMES = ("file", "http", "https", "gs", "hf")
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


class DownloadError(OpenpiError):
    """A source could not be found or fetched."""


class UnreachableError(DownloadError):
    """The source's host could not be reached: no network, a failed name lookup, a refused or timed-out connection."""


def default_cache_dir() -> Path:
    """``$OPENPI_DATA_HOME``, else ``~/.cache/openpi`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser().resolve()


def is_url(source: str) -> bool:
    """Whether ``source`` is a URL this module fetches (not a local path, Windows drives included)."""
    return urllib.parse.urlparse(source).scheme in URL_SCHEMES


def gs_to_https(url: str) -> str:
    """``gs://bucket/path`` -> its public endpoint ``https://storage.googleapis.com/bucket/path``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "gs" or not parsed.netloc:
        raise DownloadError(f"not a gs://bucket/path URL: {url!r}")
    return f"{GCS_HTTPS_ENDPOINT}/{parsed.netloc}/{parsed.path.lstrip('/')}"


def hf_to_https(url: str) -> str:
    """``hf://org/repo[@rev]/path`` -> ``https://huggingface.co/org/repo/resolve/<rev or main>/path``.

    Raises:
        DownloadError: ``url`` does not name an organisation, a repository and a file.
    """
    parsed = urllib.parse.urlparse(url)
    parts = [parsed.netloc, *parsed.path.split("/")] if parsed.scheme == "hf" else []
    parts = [part for part in parts if part]
    if len(parts) < 3:
        raise DownloadError(f"expected hf://<org>/<repo>[@<revision>]/<path>, got {url!r}")
    org, repo, path = parts[0], parts[1], "/".join(parts[2:])
    repo, _, revision = repo.partition("@")
    if not repo:
        raise DownloadError(f"expected hf://<org>/<repo>[@<revision>]/<path>, got {url!r}: the repository is empty")
    return f"{HF_HTTPS_ENDPOINT}/{org}/{repo}/resolve/{revision or HF_DEFAULT_REVISION}/{path}"


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where ``url`` is cached: ``<cache_dir>/<host or bucket, or 'file'>/<path>``.

    An ``hf://`` URL is cached where its ``https://huggingface.co/...`` form is.
    """
    if urllib.parse.urlparse(url).scheme == "hf":
        url = hf_to_https(url)
    parsed = urllib.parse.urlparse(url)
    relative = urllib.parse.unquote(parsed.path).strip("/")
    if not relative:
        raise DownloadError(f"{url!r} names no file or directory")
    root = cache_dir.resolve()
    local = (root / (parsed.netloc or parsed.scheme) / relative).resolve()
    if not local.is_relative_to(root) or local == root:
        raise DownloadError(f"{url!r} points outside the cache directory {root}")
    return local


def maybe_download(
    url_or_path: str | os.PathLike[str], cache_dir: str | Path | None = None, *, force: bool = False
) -> Path:
    """A local path holding ``url_or_path``: the path itself, or its copy in the cache.

    A URL already in the cache is not fetched again unless ``force``.

    Args:
        cache_dir: defaults to :func:`default_cache_dir`.

    Returns:
        An absolute path that exists (a file, or a directory for directory sources).

    Raises:
        DownloadError: a local path that does not exist, or a URL that cannot be
            fetched; the message then names the cache path where the file may be put by hand.
    """
    source = os.fspath(url_or_path)
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DownloadError(f"no such file or directory: {path}")
        return path.resolve()
    local = cache_path(source, Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    if local.exists() and not force:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(local.with_name(local.name + ".lock")):
        if local.exists():
            if not force:
                return local  # another process fetched it while we waited
            _remove(local)
        scratch = local.with_name(local.name + ".partial")
        _remove(scratch)
        try:
            _fetch(source, scratch)
            os.replace(scratch, local)
        except UnreachableError as error:
            raise UnreachableError(
                f"{error}. Without network access, place the file or folder by hand at {local} "
                f"(the cache path of {source}), or run again once the network is back"
            ) from error
        except DownloadError as error:
            raise DownloadError(
                f"{error}. Without network access, place the file or folder by hand at {local} (the cache path of {source})"
            ) from error
        finally:
            _remove(scratch)
    return local


def _fetch(url: str, destination: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        source = Path(urllib.request.url2pathname(parsed.path))
        if source.is_dir():
            shutil.copytree(source, destination)
            return
    if parsed.scheme == "gs":
        _fetch_gs(url, destination)
        return
    if parsed.scheme == "hf":
        _stream(hf_to_https(url), destination)
        return
    _stream(url, destination)


def _fetch_gs(url: str, destination: Path) -> None:
    try:
        import fsspec

        filesystem = fsspec.filesystem("gs")
    except ImportError:
        try:
            _stream(gs_to_https(url), destination)
        except UnreachableError:
            raise
        except DownloadError as error:
            raise DownloadError(
                f"{error}. Over plain HTTPS only single public objects can be fetched; for directories "
                f"(such as openpi checkpoints) install gcsfs: pip install gcsfs"
            ) from error
        return
    try:
        filesystem.get(url, str(destination), recursive=filesystem.isdir(url))
    except (OSError, ValueError) as error:
        if _is_unreachable(error):
            raise UnreachableError(_unreachable_message(url, error)) from error
        raise DownloadError(f"could not fetch {url}: {error}") from error


def _stream(url: str, destination: Path) -> None:
    """Copy one URL (``http(s)://`` or ``file://``) to ``destination`` in chunks, with a progress bar."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError) as error:
        if urllib.parse.urlparse(url).scheme in ("http", "https") and _is_unreachable(error):
            raise UnreachableError(_unreachable_message(url, error)) from error
        raise DownloadError(f"could not fetch {url}: {error}") from error
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    written = 0
    with response, open(destination, "wb") as out, _progress_bar(total, Path(url).name) as advance:
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            written += len(chunk)
            advance(len(chunk))
    if total is not None and written != total:
        raise DownloadError(f"could not fetch {url}: got {written} of {total} bytes")


def _is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the host could not be reached, as opposed
    to an answer from it (an HTTP status) or a local problem."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, urllib.error.HTTPError):
            return False
        if isinstance(current, socket.gaierror | ConnectionError | TimeoutError):
            return True
        reason = current.reason if isinstance(current, urllib.error.URLError) else None
        current = reason if isinstance(reason, BaseException) else current.__cause__ or current.__context__
    return False


def _unreachable_message(url: str, error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    parsed = urllib.parse.urlparse(GCS_HTTPS_ENDPOINT if url.startswith("gs://") else url)
    host = parsed.hostname or url
    return f"the network is unreachable: cannot reach {host} to fetch {url} ({reason})"


@contextlib.contextmanager
def _progress_bar(total: int | None, description: str) -> Iterator[Callable[[int], object]]:
    """A byte progress bar from tqdm when it is installed (shown on terminals only), else nothing."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda _: None
        return
    with tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, disable=None) as bar:
        yield bar.update


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` body."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks on this platform
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
