//! Pod sources: the static pod directory and URL (later the API server),
//! merged into one stream of ADD / UPDATE / DELETE / RECONCILE per pod.
