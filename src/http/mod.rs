//! HTTP/1.1 over TCP and TLS (rustls): the client used for registries, the
//! static pod URL, httpGet probes and hooks, and the API server; the small
//! server behind the local HTTP API.
