//! The sync loop and the pod workers: turn desired pods plus observed state
//! into runtime actions.
