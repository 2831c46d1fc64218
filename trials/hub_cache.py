"""Hub ids without the network: models and datasets from the local Hugging Face cache.

With ``HF_HUB_OFFLINE=1`` (a pre-filled cache, or an air-gapped mirror of one),
``from_pretrained("org/name", revision=...)`` reads the cache on its own; this module
finds what is not there before anything loads, so the user gets one line that names the
key (``model.name_or_path`` or ``model.revision``), and it gives ``datasets`` the cached
snapshot's files, which it cannot find offline by itself (it reads only its own arrow
cache then).
"""

from __future__ import annotations

from pathlib import Path

from peftsearch.errors import UserError

__all__ = ["cached_snapshot", "check_cached_model", "offline"]


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_revisions(folder: Path) -> list[str]:
    refs = folder / "refs"
    return sorted(p.name for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []


def cached_snapshot(
    repo_id: str, repo_type: str, revision: str | None, *, key: str, revision_key: str
) -> Path:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or
    commit; default main), or a UserError naming ``key`` (no such repository in the
    cache) or ``revision_key`` (not that revision)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    if not folder.is_dir():
        raise UserError(
            f"{repo_type} {repo_id!r} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it",
            where=key,
            hint="download it there on a connected machine, set HF_HUB_CACHE, or use a local path",
        )
    try:
        return Path(
            snapshot_download(
                repo_id, repo_type=repo_type, revision=revision, local_files_only=True
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        cached = ", ".join(_cached_revisions(folder)) or "none"
        raise UserError(
            f"revision {revision or 'main'!r} of {repo_id!r} is not in the Hugging Face "
            f"cache (cached revisions: {cached})",
            where=revision_key,
            hint="set it to a cached revision, or fill the cache with this one",
        ) from None


def check_cached_model(name_or_path: str, revision: str | None) -> None:
    """Offline, a hub model id must be in the cache at its revision; a local folder, or
    an online run, is left to ``from_pretrained``."""
    local = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if not offline() or local or Path(name_or_path).exists():
        return
    cached_snapshot(
        name_or_path, "model", revision, key="model.name_or_path", revision_key="model.revision"
    )
