"""One TLS context per process for every HTTP client, made the way httpx makes it.

Why: an `httpx.Client` builds its TLS context when it is created, and that loads the whole CA
bundle (certifi's, or the file `SSL_CERT_FILE` names): about 20 ms of CPU for every client,
whether or not it ever speaks TLS. A sync creates one client per run (more with concurrent
ranges) and a long-lived Dagster process one per account and run; the context holds only trust
settings, which do not change between them. So it is built once per (trust_env, CA file, CA
dir) and shared: Python's `ssl.SSLContext` may serve many connections and threads at once.
The CA variables are part of the key, so a process that changes them gets a new context.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx


def tls_context(trust_env: bool) -> ssl.SSLContext:
    """The context httpx would build with `verify=True` and this `trust_env`, built once."""
    if not trust_env:
        return _built(False, None, None)
    return _built(True, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _built(trust_env: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # httpx reads SSL_CERT_FILE / SSL_CERT_DIR itself (when trust_env); the key holds them.
    return httpx.create_ssl_context(verify=True, trust_env=trust_env)
