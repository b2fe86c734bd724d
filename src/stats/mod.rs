//! Machine info and usage figures from /proc and cgroupfs.

pub mod machine;
