"""SNMPv3 user-based security (RFC 3414, RFC 7860 for SHA-2, RFC 3826 for AES-128).

Keys: the pass phrase stretched to 1 MiB and hashed, then localized to the agent's engine id
(H(Ku + engine id + Ku)). Authentication: HMAC over the whole message with the authentication
parameters zeroed, truncated (12 bytes for MD5 and SHA-1; 16/24/32/48 for SHA-224/256/384/512).
Privacy: AES-128 in CFB mode, key = the first 16 bytes of the localized privacy key, IV = engine
boots + engine time + our 8-byte salt.

hashlib and cryptography are imported only here, and this module only by an SNMPv3 device: a bus
without one maps neither OpenSSL nor cryptography.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

# protocol -> (hashlib name, length of the authentication parameters)
AUTH = {
    "MD5": ("md5", 12),
    "SHA": ("sha1", 12),
    "SHA-224": ("sha224", 16),
    "SHA-256": ("sha256", 24),
    "SHA-384": ("sha384", 32),
    "SHA-512": ("sha512", 48),
}
STRETCH = 1 << 20


class UsmError(ValueError):
    """An authentication or decryption failure (a forged, corrupted or misconfigured answer)."""


def password_key(password: str, hash_name: str) -> bytes:
    """Ku (RFC 3414 A.2): the pass phrase repeated to 1 MiB, hashed."""
    raw = password.encode()
    repeated = (raw * (STRETCH // len(raw) + 1))[:STRETCH]
    return hashlib.new(hash_name, repeated).digest()


def localize(ku: bytes, engine_id: bytes, hash_name: str) -> bytes:
    return hashlib.new(hash_name, ku + engine_id + ku).digest()


@dataclass
class User:
    name: str
    auth_protocol: str | None = None
    auth_password: str = ""
    priv_protocol: str | None = None
    priv_password: str = ""
    _ku: dict[str, bytes] = field(default_factory=dict, repr=False)
    _keys: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)

    @property
    def flags(self) -> int:
        return (1 if self.auth_protocol else 0) | (2 if self.priv_protocol else 0)

    @property
    def auth_length(self) -> int:
        return AUTH[self.auth_protocol][1] if self.auth_protocol else 0

    def keys(self, engine_id: bytes) -> tuple[bytes, bytes]:
        """(authentication key, privacy key) localized to the engine (cached: the stretch costs ~ms)."""
        if engine_id not in self._keys:
            if not self.auth_protocol:
                self._keys[engine_id] = (b"", b"")
            else:
                hname = AUTH[self.auth_protocol][0]
                if not self._ku:
                    self._ku["auth"] = password_key(self.auth_password, hname)
                    if self.priv_protocol:
                        self._ku["priv"] = password_key(self.priv_password, hname)
                auth = localize(self._ku["auth"], engine_id, hname)
                priv = localize(self._ku["priv"], engine_id, hname) if self.priv_protocol else b""
                self._keys[engine_id] = (auth, priv)
        return self._keys[engine_id]

    def sign(self, message: bytes, engine_id: bytes) -> bytes:
        assert self.auth_protocol is not None
        hname, size = AUTH[self.auth_protocol]
        return hmac.new(self.keys(engine_id)[0], message, hname).digest()[:size]

    def verify(self, message_zeroed: bytes, mac: bytes, engine_id: bytes) -> None:
        if len(mac) != self.auth_length:
            raise UsmError(f"authentication parameters of {len(mac)} bytes (expected {self.auth_length})")
        if not hmac.compare_digest(self.sign(message_zeroed, engine_id), mac):
            raise UsmError("the answer's authentication code does not match (wrong key or a corrupted answer)")

    def _cipher(self, engine_id: bytes, boots: int, etime: int, salt: bytes):
        from cryptography.hazmat.decrepit.ciphers.modes import CFB  # CFB's home since cryptography 47
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        key = self.keys(engine_id)[1][:16]
        iv = boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + salt
        return Cipher(algorithms.AES(key), CFB(iv))

    def encrypt(self, plain: bytes, engine_id: bytes, boots: int, etime: int) -> tuple[bytes, bytes]:
        """(cipher text, salt = the privacy parameters)."""
        salt = os.urandom(8)
        enc = self._cipher(engine_id, boots, etime, salt).encryptor()
        return enc.update(plain) + enc.finalize(), salt

    def decrypt(self, data: bytes, engine_id: bytes, boots: int, etime: int, salt: bytes) -> bytes:
        if len(salt) != 8:
            raise UsmError(f"privacy parameters of {len(salt)} bytes (AES expects 8)")
        dec = self._cipher(engine_id, boots, etime, salt).decryptor()
        return dec.update(data) + dec.finalize()
