#!/usr/bin/env python3
"""Verify a temppass media token in Python with the `cryptography` package.

    python3 verify_media_token.py --jwks jwks.json [--resource ID] [--skew 30] TOKEN

Prints one verdict — Valid, InvalidFormat, InvalidSignature, Expired or
InvalidResource — as temppass's own verifier does, and exits 0 only for Valid.
`--jwks` takes a file or an http(s) URL of the server's /.well-known/jwks.json.
"""
import argparse
import base64
import binascii
import json
import sys
import time
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CLAIMS = {"iss": str, "sp": str, "mvpd": str, "resource": str, "sid": str, "iat": int, "exp": int, "jti": str}


def b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def load_jwks(source: str) -> dict:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            return json.load(response)
    with open(source, encoding="utf-8") as handle:
        return json.load(handle)


def verify(token: str, jwks: dict, now: int, skew: int, resource: str | None) -> str:
    if "." not in token:  # temppass also accepts a Base64-wrapped compact JWS
        try:
            token = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_" if "-" in token or "_" in token else None).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "InvalidFormat"
    parts = token.split(".")
    if len(parts) != 3:
        return "InvalidFormat"
    try:
        header, claims, signature = json.loads(b64url(parts[0])), json.loads(b64url(parts[1])), b64url(parts[2])
    except (binascii.Error, ValueError):
        return "InvalidFormat"
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return "InvalidFormat"
    if any(not isinstance(claims.get(name), kind) for name, kind in CLAIMS.items()):
        return "InvalidFormat"
    # Only EdDSA: never let the token's header choose the algorithm ("none", HS256…).
    if header.get("alg") != "EdDSA":
        return "InvalidSignature"
    keys = [k for k in jwks.get("keys", []) if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"]
    key = next((k for k in keys if k.get("kid") == header.get("kid")), None)
    if key is None:
        return "InvalidSignature"
    try:
        public_key = Ed25519PublicKey.from_public_bytes(b64url(key["x"]))
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except (InvalidSignature, ValueError, binascii.Error):
        return "InvalidSignature"
    if claims["iat"] > now + skew:
        return "InvalidFormat"
    if now >= claims["exp"] + skew:
        return "Expired"
    if resource is not None and claims["resource"] != resource:
        return "InvalidResource"
    return "Valid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--resource")
    parser.add_argument("--skew", type=int, default=30)
    parser.add_argument("token")
    args = parser.parse_args()
    verdict = verify(args.token.strip(), load_jwks(args.jwks), int(time.time()), args.skew, args.resource)
    print(verdict)
    return 0 if verdict == "Valid" else 1


if __name__ == "__main__":
    sys.exit(main())
