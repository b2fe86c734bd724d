//! Compiles the shim and ttrpc messages in `proto/` with protobuf-codegen's
//! pure-Rust parser (no `protoc` needed). Each group goes to its own OUT_DIR
//! sub-directory because two inputs are named `task.proto`.

fn main() {
    let groups: &[(&str, &[&str])] = &[
        ("ttrpc", &["proto/ttrpc.proto"]),
        (
            "task",
            &[
                "proto/runtime/v2/task/shim.proto",
                "proto/types/mount.proto",
                "proto/types/task/task.proto",
            ],
        ),
        (
            "events",
            &[
                "proto/services/ttrpc/events/v1/events.proto",
                "proto/types/event.proto",
                "proto/types/mount.proto",
                "proto/events/task.proto",
            ],
        ),
        ("cgroups_v1", &["proto/cgroups/stats/v1/metrics.proto"]),
        ("cgroups_v2", &["proto/cgroups/cgroup2/stats/metrics.proto"]),
    ];
    for (dir, inputs) in groups {
        protobuf_codegen::Codegen::new()
            .pure()
            .include("proto")
            .inputs(inputs.iter())
            .cargo_out_dir(dir)
            // No reflection or descriptors: smaller binary; Any is unpacked by type_url.
            .customize(protobuf_codegen::Customize::default().lite_runtime(true))
            .run_from_script();
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
}
