"""Security of the service: data-key encryption at rest, API keys, request signing, rate limits, audit."""

from engine.security.apikeys import (
    SCOPES,
    ApiKey,
    NonceCache,
    RateLimiter,
    audit,
    authenticate,
    create_key,
    sign_request,
    verify_signature,
)
from engine.security.crypto import CryptoError, Keyring, is_ciphertext, load_keyring

__all__ = ["SCOPES", "ApiKey", "CryptoError", "Keyring", "NonceCache", "RateLimiter", "audit", "authenticate",
           "create_key", "is_ciphertext", "load_keyring", "sign_request", "verify_signature"]
