"""``peftsearch verify``: is this adapter folder the one the search measured?

An export pins its files (sha256) and its base model (``peftsearch_export.json``,
``results/export.py``); a registered version pins the same in its MLflow tags. Verifying
reads them back: every pinned file must be there with its sha256, the adapter's own
config must name the recorded base, and the base itself, when it is on this machine (a
local folder, or the Hugging Face cache), must be the recorded one: a local folder's
files hash to the recorded identity; a hub id's revision resolves to the recorded commit
in the cache, and each cached file matches the sha256 its blob is named by.

The checks stop at nothing: every difference found is reported, the first one in the
one-line verdict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsearch.errors import UserError
from peftsearch.results.export import (
    ADAPTER_FILES,
    EXPORT_RECORD,
    adapter_digests,
    base_identity,
)

__all__ = ["Verification", "read_record", "registry_record", "verify_export"]


@dataclass
class Verification:
    """What ``verify_export`` found: ``problems`` (each names the file or key that
    differs and where), empty when the folder is what the search measured."""

    folder: Path
    record: dict[str, Any]
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The verdict in one line."""
        source = self.record.get("source", EXPORT_RECORD)
        if self.ok:
            return (
                f"OK: {self.folder} is trial {self.record.get('trial')} of study "
                f"{self.record.get('study')!r} as exported ({', '.join(self.checked)}; "
                f"checked against {source})"
            )
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"MISMATCH in {self.folder}: {self.problems[0]}{more}"


def read_record(folder: Path) -> dict[str, Any]:
    """The export's record, or a UserError naming the folder."""
    if not folder.is_dir():
        raise UserError("no such adapter folder", where=str(folder))
    path = folder / EXPORT_RECORD
    if not path.is_file():
        raise UserError(
            f"no {EXPORT_RECORD} in the folder: it was not exported by peftsearch, or by a "
            "version before 0.2",
            where=str(folder),
            hint="export the trial again with `peftsearch export`",
        )
    try:
        record = dict(json.loads(path.read_text()))
    except ValueError as error:
        raise UserError(f"{EXPORT_RECORD} is not JSON: {error}", where=str(path)) from None
    return record


def registry_record(name: str, tracking_uri: str | None, local: dict[str, Any]) -> dict[str, Any]:
    """The pins of a registered version (``NAME`` or ``NAME/VERSION``, the latest by
    default) in the record's shape: its files' sha256 and base identity tags."""
    from peftsearch.search.tracking import model_version

    model, _, wanted = name.partition("/")
    version = model_version(model, wanted or None, tracking_uri)
    tags = dict(version.tags)
    files = {k.removeprefix("sha256."): v for k, v in tags.items() if k.startswith("sha256.")}
    base = dict(local.get("base") or {})
    base["identity"] = tags.get("base_model_identity", base.get("identity"))
    base["name_or_path"] = tags.get("base_model", base.get("name_or_path"))
    return {
        **local,
        "files": files,
        "base": base,
        "source": f"registered model {model!r} version {version.version}",
    }


def verify_export(
    folder: Path,
    record: dict[str, Any],
    *,
    revision: str | None = None,
    check_base: bool = True,
) -> Verification:
    """Check ``folder`` against ``record`` (``read_record``, or ``registry_record``).
    ``revision``: the base revision the adapter is to be deployed on, checked against
    the one it was trained on."""
    result = Verification(folder, record)
    _check_files(folder, record, result)
    _check_adapter_config(folder, record, result)
    base = record.get("base") or {}
    if revision is not None and revision != (base.get("revision") or "main"):
        result.problems.append(
            f"revision: the base to deploy on is {base.get('name_or_path')}@{revision}, but "
            f"the adapter was trained on @{base.get('revision') or 'main'}"
        )
    if check_base:
        _check_base(base, result)
    return result


def _check_files(folder: Path, record: dict[str, Any], result: Verification) -> None:
    pinned: dict[str, str] = dict(record.get("files") or {})
    if not pinned:
        result.problems.append("the record pins no adapter files")
        return
    present = adapter_digests(folder)
    for name, digest in pinned.items():
        if name not in present:
            result.problems.append(f"{name}: missing (the export had it)")
        elif present[name] != digest:
            result.problems.append(
                f"{name}: sha256 {present[name][:12]}... differs from the exported "
                f"{digest[:12]}... (the file changed since the export)"
            )
    for name in present:
        if name not in pinned and name in ADAPTER_FILES:
            result.problems.append(f"{name}: not in the export (a file was added)")
    if all(name in present for name in pinned):
        result.checked.append(f"{len(pinned)} files' sha256")


def _check_adapter_config(folder: Path, record: dict[str, Any], result: Verification) -> None:
    """The adapter names its base in ``adapter_config.json``; it must be the recorded one
    (a hub id, or a local folder: compared by its name, as the folder may have moved)."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
    except ValueError:
        result.problems.append("adapter_config.json: not JSON")
        return
    base = record.get("base") or {}
    before = len(result.problems)
    named = str(config.get("base_model_name_or_path") or "")
    recorded = str(base.get("name_or_path") or "")
    if named and recorded and Path(named).name != Path(recorded).name:
        result.problems.append(
            f"adapter_config.json: base_model_name_or_path is {named!r}, but the search "
            f"trained on {recorded!r}"
        )
    named_revision = config.get("revision")
    if named_revision and base.get("revision") and named_revision != base["revision"]:
        result.problems.append(
            f"adapter_config.json: revision is {named_revision!r}, but the search trained "
            f"on revision {base['revision']!r}"
        )
    if len(result.problems) == before:
        result.checked.append("the adapter's base")


def _check_base(base: dict[str, Any], result: Verification) -> None:
    """The base on this machine against the recorded one, where it is here."""
    from peftsearch.trials import Checkpoint

    name = str(base.get("name_or_path") or "")
    identity = base.get("identity")
    if not name or not identity:
        return
    checkpoint = Checkpoint(name, revision=base.get("revision"), gguf_file=base.get("gguf_file"))
    if Path(name).is_dir():
        found = base_identity(checkpoint)
        if found != identity:
            result.problems.append(
                f"base model {name}: its files hash to {found.rsplit(':', 1)[-1][:12]}..., "
                f"not the {str(identity).rsplit(':', 1)[-1][:12]}... the search trained on"
            )
        else:
            result.checked.append("the base's files")
        return
    _check_cached_base(name, base, result)


def _check_cached_base(name: str, base: dict[str, Any], result: Verification) -> None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, revision=base.get("revision"), local_files_only=True))
    except Exception:
        result.checked.append("the base is not on this machine: not checked")
        return
    commit = base.get("commit")
    if commit and folder.name != commit:
        result.problems.append(
            f"revision: {name}@{base.get('revision') or 'main'} resolves to commit "
            f"{folder.name[:12]} in the Hugging Face cache, but the search trained on "
            f"commit {str(commit)[:12]}"
        )
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = path.resolve()
        if len(blob.name) == 64 and _sha256(blob) != blob.name:  # an LFS file, by sha256
            result.problems.append(
                f"base model {name}: cached file {path.relative_to(folder)} does not match "
                "its sha256 (the cache is corrupt or was edited)"
            )
            return
    result.checked.append("the base's cached files")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
