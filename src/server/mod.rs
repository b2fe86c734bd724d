//! The local HTTP API: /healthz, and on the read-only port /pods, /spec,
//! /runningpods.
