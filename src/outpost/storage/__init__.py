"""The object store seam: artifacts by key, on the filesystem or in S3, and signed download links.

`base` holds the protocol, `keys` the key rules (and `join_key` for untrusted names), `factory` builds
the configured backend. Importing this package loads neither backend.
"""
