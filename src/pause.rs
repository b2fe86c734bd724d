//! `picolet pause`: the pod's infra process.
