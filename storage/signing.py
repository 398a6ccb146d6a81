"""Signed files: the signature document beside each data file, how it is written, read, checked and migrated.

Rules:

- A node signs every file it writes (segments, compacted files) with :meth:`cluster.pki.Signer.sign` over the file's
  id and sha256. The document is written first, as ``<id>.sig`` beside ``<id>.parquet`` (both under a temporary
  name then renamed, mode 0640), so that a named data file of a signing node always has its signature beside it.
- Durability: the signature is *not* fsync-ed on its own (one create + fsync more per file cost more than the 10 %
  of push lag that signing may cost, issue 12). The data file's fsync and the folder's fsync that follow make the
  data file and both *names* durable; the signature's bytes are durable once the OS has written them back (seconds).
  After a crash in between, the document may be empty or torn. So a signature document that is not well formed
  (:func:`well_formed`: not a JSON object with the fields of :meth:`cluster.pki.Signer.sign`) is treated as
  **missing**, never as a bad signature: :func:`read_sig` returns None for it, the catalog lists the file as
  unsigned (nothing is quarantined), the node signs its own such files again at start (:func:`sign_own_unsigned`),
  and it fetches the peer's signature of the others (:mod:`storage.replclient`). Only a well-formed document that
  fails verification is a bad signature.
- A signature is *good* for a file when :meth:`cluster.pki.Verifier.verify` accepts it for the file's id and sha256
  **and** its signer is the node that the file's metadata names as producer (``edgepair.node``): one node cannot
  sign data in the other's name.
- Migration from the unsigned release: at start, a node with an identity signs the files it holds that have no
  signature and that it produced itself (:func:`sign_own_unsigned`); the peer's unsigned files are left alone (the
  peer signs its own, and replication then copies the signature) and :mod:`storage.verify` reports them.
- A signature whose signer's certificate is not (yet) one this node can check (:class:`UnverifiableSignature`: not
  issued by a CA it trusts, e.g. while a new CA is being rolled out) is refused at the door as retryable and, held,
  counts as unsigned; a document of a known signer that does not verify, or that names another file, store or
  producer, is a bad signature.
- The pair (``allowed``, the store's configured workstations): given it, a signature is good only when its signer and
  every producer of the file (``edgepair.node`` and, for a compacted file, every run's node) are workstations of the
  pair (:class:`ForeignSigner` otherwise). A certificate of the store CA that is not one of the pair (a replaced
  workstation never revoked) is refused at the door for good and, held, is treated like an unverifiable signature:
  left alone, reported, never compacted into a new signed file.
- Nesting: a document nested too deep for the JSON parser (thousands of ``[``) is no crash's doing (a torn document
  is a prefix of a good one): it is a *bad* signature at the door, and not well formed (missing) on disk.
- The signer reaches the Ray camera actors as plain data (:class:`SignerRef`: the certificate folder and the node
  name); each actor loads its key itself, so no key material is pickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.errors import StorageError
from storage.layout import sig_path
from storage.segments import sha256_file, write_atomic

if TYPE_CHECKING:
    from cluster.config import Config
    from cluster.pki import Signer, Verifier
    from storage.catalog import CatalogEntry

log = logging.getLogger(__name__)

MAX_SIG_BYTES = 8192  # cluster.pki.MAX_SIG_BYTES: a document is about 1.2 KiB
SIG_FIELDS = ("v", "alg", "store", "id", "sha256", "signer", "cert", "sig")


class MissingSignature(StorageError):
    """No signature document, or one that is not well formed (:func:`well_formed`): the file is unsigned."""


class UnverifiableSignature(StorageError):
    """A well-formed signature whose signer's certificate this node cannot check (yet): not proof of forgery."""


class ForeignSigner(StorageError):
    """A valid signature, but its signer or a producer of the file is not a workstation of the pair (module rules)."""


class NestedSignature(StorageError):
    """A signature document nested too deep for the JSON parser: garbage, not a torn document."""


def _loads(doc: bytes) -> object:
    """``json.loads`` of a signature document; :class:`NestedSignature` for a nesting the parser cannot take."""
    try:
        return json.loads(doc)
    except RecursionError:
        raise NestedSignature("signature document nested too deep for the JSON parser") from None


def outside_pair(producers: Iterable[str], allowed: Collection[str] | None) -> list[str]:
    """The names of ``producers`` that are not workstations of the pair ``allowed`` (None: no pair known), sorted."""
    if allowed is None:
        return []
    return sorted(set(producers) - set(allowed))


def well_formed(doc: bytes | None) -> bool:
    """True if ``doc`` is a whole signature document (a JSON object with every field of
    :meth:`cluster.pki.Signer.sign`, strings or the integer version); False for none, empty, torn or garbage."""
    if not doc or len(doc) > MAX_SIG_BYTES:
        return False
    try:
        d = _loads(doc)
    except (ValueError, UnicodeDecodeError, NestedSignature):
        return False
    return isinstance(d, dict) and all(isinstance(d.get(k), str | int) for k in SIG_FIELDS)


@dataclass(frozen=True)
class SignerRef:
    """Where a node's signing key is, as plain data for a Ray actor: :meth:`load` gives the :class:`Signer`."""

    cert_dir: str
    node: str

    @classmethod
    def from_config(cls, config: Config) -> SignerRef | None:
        """This node's reference, or None when ``security.tls`` is false (unsigned files, the explicit opt-out)."""
        if not config.security.tls:
            return None
        return cls(str(config.security.cert_dir), config.node)

    def load(self) -> Signer:
        from cluster.pki import Identity

        return Identity.load(self.cert_dir, self.node).signer()


def read_sig(path: Path) -> bytes | None:
    """The signature document beside the data file ``path``: None if there is none or it is not well formed (empty
    or torn by a crash: treated as missing, module rules); StorageError if it cannot be read."""
    sp = sig_path(path)
    try:
        with open(sp, "rb") as f:
            doc = f.read(MAX_SIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read signature {sp}: {exc}") from exc
    if not well_formed(doc):
        log.warning("signature %s is empty, torn or not a signature document (%d bytes): treated as missing", sp,
                    len(doc))  # fmt: skip
        return None
    return doc


def check_signature(
    verifier: Verifier,
    doc: bytes | None,
    file_id: str,
    sha256: str,
    producer: str,
    *,
    allowed: Collection[str] | None = None,
    producers: Iterable[str] = (),
) -> str:
    """The signer if ``doc`` is a good signature of the file (module rules); StorageError saying why not:
    :class:`MissingSignature` for none or a document that is not well formed, :class:`UnverifiableSignature` when its
    signer's certificate cannot be checked here, :class:`ForeignSigner` when ``allowed`` (the pair) is given and the
    signer, ``producer`` or one of ``producers`` (a compacted file's run nodes) is not in it."""
    from cluster.pki import PKIError

    if doc:
        try:
            _loads(doc)
        except NestedSignature as exc:
            raise StorageError(f"bad signature of {file_id}: {exc}") from None
        except ValueError:
            pass
    if not well_formed(doc):
        raise MissingSignature(f"{file_id} is not signed" + (" (torn or malformed signature document)" if doc else ""))
    assert doc is not None
    try:
        verifier.signer_of(str(json.loads(doc)["cert"]))
    except PKIError as exc:
        raise UnverifiableSignature(f"signature of {file_id} cannot be checked: {exc}") from None
    try:
        signer = verifier.verify(bytes(doc), file_id, sha256)
    except PKIError as exc:
        raise StorageError(f"bad signature of {file_id}: {exc}") from None
    if signer != producer:
        raise StorageError(f"{file_id} was produced by {producer} but signed by {signer}")
    outside = outside_pair([signer, producer, *producers], allowed)
    if outside:
        raise ForeignSigner(
            f"{file_id}: {', '.join(outside)} is not a workstation of this store's pair"
            f" ({', '.join(sorted(allowed or ()))})"
        )
    return signer


def write_signed(
    path: Path, data: bytes, sha256: str, file_id: str, *, signer: Signer | None = None, sig: bytes | None = None
) -> None:
    """The signature (``sig``, else made by ``signer``, else none) then the file, each atomically; the file is never
    written over an existing one (FileExistsError). Durable on return: the file and both names; the signature's
    bytes are not fsync-ed (module rules)."""
    doc = sig if sig is not None else signer.sign(file_id, sha256) if signer is not None else None
    if doc is not None:  # its folder is fsync-ed by the file's write, which follows at once
        write_atomic(sig_path(path), doc, sync_dir=False, sync_file=False)
    try:
        write_atomic(path, data, exclusive=True)
    except BaseException:
        if doc is not None and not path.exists():
            sig_path(path).unlink(missing_ok=True)
        raise


def remove_with_sig(path: Path) -> None:
    """Delete a data file and its signature (the signature last: a file never stays named without it)."""
    path.unlink(missing_ok=True)
    sig_path(path).unlink(missing_ok=True)


def sign_own_unsigned(
    data_dir: Path,
    entries: Iterable[CatalogEntry],
    signer: Signer,
    node: str,
    signed_ids: Collection[str] | None = None,
) -> int:
    """Sign the files of ``entries`` that this node produced and that have no valid signature document (none, or
    empty/torn after a crash); returns how many. ``signed_ids``: the ids a catalog scan found well signed (their
    documents are not read again); None reads every document of this node's files.

    Each file is hashed again first: one that no longer matches its catalogued sha256 is left for the catalog to
    quarantine, never signed.
    """
    signed = 0
    for e in entries:
        path = Path(data_dir) / e.relpath
        if e.node != node:
            continue
        if e.segment_id in signed_ids if signed_ids is not None else read_sig(path) is not None:
            continue
        try:
            if sha256_file(path) != e.sha256:
                log.error("node %s: %s changed since it was catalogued: not signed", node, e.segment_id)
                continue
            write_atomic(sig_path(path), signer.sign(e.segment_id, e.sha256))
        except (OSError, StorageError) as exc:
            log.error("node %s: cannot sign %s: %s", node, e.segment_id, exc)
            continue
        signed += 1
    if signed:
        log.info("node %s: signed %d files of its own written by the unsigned release", node, signed)
    return signed
