"""``edgepair verify``: prove that the files held are the ones their producers signed. Read only.

Every data file under ``<data_dir>/events`` is hashed again and its footer read; its signature document (``<id>.sig``)
must name that sha256 and, with a verifier, verify as the signature of the node that produced the file
(:func:`storage.signing.check_signature`). Nothing is moved, written or cached: a file that fails is reported with its
reason (the node's own scan quarantines it). Files in ``refused/`` and ``quarantine/`` are counted apart, not
checked: they are not part of the dataset. The signer of each file is reported (``signers``); given the store's
workstations (``nodes``), a file signed or produced by another node is flagged (``foreign``) and fails the audit.

The node's materialised KPI blocks (``<data_dir>/kpi``, :mod:`storage.kpimat`) are checked too: every view file
against the checksum its ``block.json`` lists and, with a verifier, the block's signature by a workstation. Readers
leave a failing block out (its days are computed from the events), so it changes no number; it still fails the audit
(``bad_blocks``): someone other than the node wrote there, or the disk damaged it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.errors import StorageError
from storage.catalog import QUARANTINE_DIR, entry_from_file
from storage.layout import EVENTS_DIR, PARQUET_SUFFIX, REFUSED_DIR, SIG_SUFFIX
from storage.segments import is_temp_file, sha256_file
from storage.signing import check_signature, outside_pair, read_sig

if TYPE_CHECKING:
    from cluster.pki import Verifier


@dataclass
class VerifyReport:
    """What :func:`verify_data_dir` found; ``problems`` maps a file's path (relative to the data dir) to why."""

    files: int = 0
    ok: int = 0
    unsigned: list[str] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    checksum_failures: list[str] = field(default_factory=list)
    orphan_signatures: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    refused: int = 0
    quarantined: int = 0
    signatures_checked: bool = True
    signers: dict[str, str] = field(default_factory=dict)
    """path -> the node whose signature verified (or the signer its document names, without a verifier)."""
    foreign: list[str] = field(default_factory=list)
    """Files signed or produced by a node outside ``nodes`` (the store's workstations)."""
    blocks: int = 0
    """Materialised KPI blocks checked (``kpi/``)."""
    bad_blocks: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every file held is intact and signed by its producer (unsigned files fail an audit too)."""
        return not (self.unsigned or self.bad_signatures or self.checksum_failures or self.foreign or self.bad_blocks)

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "files": self.files,
            "ok": self.ok,
            "unsigned": self.unsigned,
            "bad_signatures": self.bad_signatures,
            "checksum_failures": self.checksum_failures,
            "orphan_signatures": self.orphan_signatures,
            "problems": self.problems,
            "refused": self.refused,
            "quarantined": self.quarantined,
            "signatures_checked": self.signatures_checked,
            "signers": self.signers,
            "foreign": self.foreign,
            "kpi_blocks": self.blocks,
            "bad_kpi_blocks": self.bad_blocks,
        }

    def summary(self) -> str:
        """One line for a terminal, then one line per file that failed."""
        head = (
            f"{'PASSED' if self.passed else 'FAILED'}: {self.files} files, {self.ok} ok, {len(self.unsigned)} unsigned,"
            f" {len(self.bad_signatures)} bad signatures, {len(self.checksum_failures)} checksum failures,"
            f" {len(self.foreign)} of nodes outside the pair, {self.blocks} KPI blocks ({len(self.bad_blocks)} bad)"
            f" ({self.refused} refused, {self.quarantined} quarantined kept apart)"
        )
        if not self.signatures_checked:
            head += "; signatures NOT checked (no CA given: pass --config)"
        by = Counter(self.signers.values())
        head += "; signed by " + (", ".join(f"{n} ({k})" for n, k in sorted(by.items())) or "no one")
        return "\n".join([head, *(f"  {rel}: {why}" for rel, why in sorted(self.problems.items()))])


def _count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and SIG_SUFFIX not in p.name) if folder.is_dir() else 0


def verify_data_dir(data_dir: Path, verifier: Verifier | None, nodes: Collection[str] | None = None) -> VerifyReport:
    """Check every file held under ``data_dir`` (module rules). Read only; ``verifier`` None checks checksums only;
    ``nodes``: the store's workstations (None: any node of the store CA)."""
    data_dir = Path(data_dir)
    report = VerifyReport(signatures_checked=verifier is not None)
    report.refused = _count(data_dir / REFUSED_DIR)
    report.quarantined = _count(data_dir / QUARANTINE_DIR)
    root = data_dir / EVENTS_DIR
    names = sorted(root.glob("store=*/date=*/camera=*/*")) if root.is_dir() else []
    parquet = {p for p in names if p.suffix == PARQUET_SUFFIX and not is_temp_file(p)}
    for p in names:
        if p.suffix == SIG_SUFFIX and p.with_suffix(PARQUET_SUFFIX) not in parquet:
            report.orphan_signatures.append(str(p.relative_to(data_dir)))
    for path in sorted(parquet):
        rel = str(path.relative_to(data_dir))
        report.files += 1
        try:
            sha = sha256_file(path)
            entry = entry_from_file(path, data_dir, sha)
        except (OSError, StorageError) as exc:
            report.checksum_failures.append(rel)
            report.problems[rel] = f"unreadable: {exc}"
            continue
        try:
            doc = read_sig(path)
        except StorageError as exc:
            report.bad_signatures.append(rel)
            report.problems[rel] = str(exc)
            continue
        if doc is None:
            report.unsigned.append(rel)
            report.problems[rel] = f"not signed (produced by {entry.node})"
            continue
        try:
            signed = json.loads(doc)
            signed_id, signed_sha, signer = signed.get("id"), signed.get("sha256"), str(signed.get("signer"))
        except (ValueError, AttributeError, RecursionError):
            signed_id = signed_sha = None
            signer = "?"
        if signed_id == entry.segment_id and signed_sha != sha:
            report.checksum_failures.append(rel)
            report.problems[rel] = f"sha256 {sha[:12]} is not the signed {str(signed_sha)[:12]}: altered after signing"
            continue
        if verifier is not None:
            try:
                signer = check_signature(verifier, doc, entry.segment_id, sha, entry.node)
            except StorageError as exc:
                report.bad_signatures.append(rel)
                report.problems[rel] = str(exc)
                continue
        report.signers[rel] = signer
        outside = outside_pair([signer, entry.node, *(r.node for r in entry.runs)], nodes)
        if outside:
            report.foreign.append(rel)
            report.problems[rel] = f"signed by {signer}; {', '.join(outside)} not a workstation of the store"
            continue
        report.ok += 1
    _verify_blocks(data_dir, verifier, nodes, report)
    return report


def _verify_blocks(
    data_dir: Path, verifier: Verifier | None, nodes: Collection[str] | None, report: VerifyReport
) -> None:
    from storage.kpimat import BLOCK_FILE, check_block_folder
    from storage.sandbox import KPI_DIR

    root = data_dir / KPI_DIR
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir() or not (folder / BLOCK_FILE).exists():
            continue  # a block being written (``.tmp-*``), or not a block
        report.blocks += 1
        why = check_block_folder(folder, verifier, nodes)
        if why:
            rel = str(folder.relative_to(data_dir))
            report.bad_blocks.append(rel)
            report.problems[rel] = f"KPI block: {why}"
