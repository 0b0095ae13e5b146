#!/usr/bin/env python3
"""Independently verifies a JWT the gcp issuer signed (RS256 or ES256) with
python3-cryptography, as Google would: usage verify_google_jwt.py JWT_FILE
PEM_FILE (a public key, or a private key whose public half is used). Prints the header and claims as JSON on success; exits 1
with the reason otherwise."""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main():
    jwt = open(sys.argv[1]).read().strip()
    pem = open(sys.argv[2], "rb").read()
    if b"PRIVATE KEY" in pem:  # the public half of the key the test gave the broker
        key = serialization.load_pem_private_key(pem, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    h, p, s = jwt.split(".")
    header, claims, sig = json.loads(b64(h)), json.loads(b64(p)), b64(s)
    signing_input = (h + "." + p).encode()
    try:
        if header["alg"] == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif header["alg"] == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                raise InvalidSignature("ES256 signature is not 64 bytes")
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            print("alg and key type differ: " + header.get("alg", "?"))
            return 1
    except InvalidSignature:
        print("signature does not verify")
        return 1
    print(json.dumps({"header": header, "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
