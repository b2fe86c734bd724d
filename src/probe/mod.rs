//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket, grpc).
