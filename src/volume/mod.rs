//! Volumes that need no API server: emptyDir, hostPath, downwardAPI.
