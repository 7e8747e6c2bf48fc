"""cryptography's primitives, imported when first used.

cryptography's Rust extension costs about 5 MiB of resident memory once
loaded (its relocated pages are each process's own), a tenth of a cold
``ls``.  A plain host seals and opens nothing, so s3archive names the
primitives through this module (``primitives.ChaCha20Poly1305``,
``except primitives.InvalidTag``), and the extension is loaded by the first
one used.  After that a name is a plain module attribute.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["ChaCha20Poly1305", "HKDF", "InvalidTag", "X25519PrivateKey", "X25519PublicKey",
           "hashes"]

_MODULES = {
    "ChaCha20Poly1305": "cryptography.hazmat.primitives.ciphers.aead",
    "HKDF": "cryptography.hazmat.primitives.kdf.hkdf",
    "InvalidTag": "cryptography.exceptions",
    "X25519PrivateKey": "cryptography.hazmat.primitives.asymmetric.x25519",
    "X25519PublicKey": "cryptography.hazmat.primitives.asymmetric.x25519",
    "hashes": "cryptography.hazmat.primitives.hashes",  # a module
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_MODULES[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value
