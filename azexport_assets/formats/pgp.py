"""OpenPGP encryption of a written export file, with the `pgpy` library.

`PgpRecipient.from_armored` reads the recipient's ASCII-armored public key (checked: public,
able to encrypt, not expired); `encrypt_file` writes the file as one binary OpenPGP message
(RFC 4880: a public-key encrypted session key, then the literal data encrypted with AES-256
and an integrity check) to another local file and returns its size and MD5. Any OpenPGP tool
decrypts it with the private key (`gpg --decrypt name.csv.pgp > name.csv`).

Memory: pgpy builds a message in memory, so encrypting a file holds the file and its
ciphertext at once (about 4x the file at the peak, measured). The configuration bounds it:
an encrypted activation must split its files at `max_file_size` (64MB at most, so about
256MB for the encryption).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCRYPTED_SUFFIX = ".pgp"
CONTENT_TYPE = "application/pgp-encrypted"


@contextmanager
def _quiet() -> Iterator[None]:
    """pgpy 0.6 imports modules and cipher modes that Python and `cryptography` have
    deprecated (not the ones used here: AES in OpenPGP's CFB mode); keep the run log clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="pgpy")
        try:
            from cryptography.utils import CryptographyDeprecationWarning

            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        except ImportError:  # pragma: no cover - older cryptography
            pass
        yield


# Bytes kept free in every size-limited part for what encryption adds: the preview (which reads
# no key) and the run then cut the same parts. Measured: about 330 bytes with an RSA-2048 key,
# 590 with RSA-4096; 2 KiB holds RSA keys of up to 15,360 bits (a larger key's own measure is
# used instead).
ENCRYPTION_RESERVE = 2048


def encrypted_part_limit(max_file_size: int | None, overhead: int = 0) -> int | None:
    """The size a part is written to so that, encrypted, it is within `max_file_size`."""
    if max_file_size is None:
        return None
    return max(1, max_file_size - max(ENCRYPTION_RESERVE, overhead))


class EncryptionKeyError(ValueError):
    """The configured public key cannot be used (never quotes the key itself)."""


@dataclass(frozen=True)
class PgpRecipient:
    """A public key files are encrypted to."""

    key: Any  # pgpy.PGPKey

    @classmethod
    def from_armored(cls, text: str, where: str) -> PgpRecipient:
        """Parse an ASCII-armored public key; `where` names it in errors (e.g. '$PGP_KEY')."""
        if not text.strip():
            raise EncryptionKeyError(
                f"{where} is empty or not set: put the recipient's public key in it"
            )
        with _quiet():
            # Imported on first use: a project without encryption never pays for it (~70 ms).
            import pgpy
        try:
            with _quiet():
                key, _ = pgpy.PGPKey.from_blob(text.strip())
        except Exception:  # noqa: BLE001 - pgpy raises many kinds; the text may be a secret
            raise EncryptionKeyError(
                f"{where} does not hold an ASCII-armored OpenPGP public key "
                "('-----BEGIN PGP PUBLIC KEY BLOCK-----' ...)"
            ) from None
        if not key.is_public:
            raise EncryptionKeyError(
                f"{where} holds a private key: give the recipient's public key only "
                "(gpg --armor --export <id>)"
            )
        recipient = cls(key)
        try:
            recipient.encrypt_bytes(b"probe")
        except Exception as error:  # noqa: BLE001
            raise EncryptionKeyError(
                f"{where}: the public key {key.fingerprint} cannot encrypt "
                f"({type(error).__name__}: is it expired, or without an encryption subkey?)"
            ) from None
        return recipient

    def size_overhead(self) -> int:
        """Bytes encryption adds to a file (its key and literal-data packets, the cipher's
        prefix, the integrity check): measured on a sample larger than the packets' short
        length forms, plus a margin, so a part sized to `max_file_size - size_overhead()` is
        within `max_file_size` once encrypted."""
        sample = 1 << 16
        return len(self.encrypt_bytes(bytes(sample))) - sample + 32

    @property
    def fingerprint(self) -> str:
        return str(self.key.fingerprint).replace(" ", "")

    def encrypt_bytes(self, data: bytes) -> bytes:
        """One binary OpenPGP message holding `data` (no compression: exports compress by
        format or `compression:`)."""
        with _quiet():
            import pgpy
            from pgpy.constants import CompressionAlgorithm, SymmetricKeyAlgorithm

            message = pgpy.PGPMessage.new(
                bytearray(data), compression=CompressionAlgorithm.Uncompressed
            )
            encrypted = self.key.encrypt(message, cipher=SymmetricKeyAlgorithm.AES256)
            return bytes(encrypted)

    def encrypt_file(self, source: Path, target: Path) -> tuple[int, str]:
        """Write `source` encrypted to `target`; returns (bytes, MD5 hex) of `target`."""
        data = source.read_bytes()
        encrypted = self.encrypt_bytes(data)
        del data
        target.write_bytes(encrypted)
        return len(encrypted), hashlib.md5(encrypted).hexdigest()
