"""A small certificate authority for one linli deployment (``linli pki``, docs/edge-deploy.md):
the CA, a certificate per gateway (its id as the common name: the cloud broker takes it as the
user name and confines the gateway to its own topics) and per service, and the broker's ACL."""

from cloud.pki.authority import Authority, PkiError

__all__ = ["Authority", "PkiError"]
