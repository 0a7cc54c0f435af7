//! Records the source revision (`MOE_VLA_REVISION`: `git rev-parse HEAD`, with `-dirty` when the
//! sources that build the crate differ from it; "unknown" outside a git checkout), which
//! `moe_vla train` writes into train.json. Also links libpython into ROS binaries when ROS 2 comes
//! from the PyPI wheels: their librcl loads `*_rosidl_generator_py` libraries that need CPython's
//! symbols. `scripts/ros_env.sh` sets MOE_VLA_LIBPYTHON to "<libdir>:<name>" in that case; ROS 2
//! from apt needs nothing. With feature `physics`, puts MuJoCo's folder on the binaries' rpath.

use std::process::Command;

/// The sources whose changes make a build differ from its commit.
const SOURCES: &[&str] = &["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn revision() -> String {
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_string();
    };
    // Re-run when HEAD moves (a commit, a checkout) or the index changes (staging, committing).
    for (flag, file) in
        [("--git-dir", "HEAD"), ("--git-dir", "index"), ("--git-common-dir", "refs/heads"), ("--git-common-dir", "packed-refs")]
    {
        if let Some(dir) = git(&["rev-parse", flag]) {
            println!("cargo:rerun-if-changed={}", std::path::Path::new(&dir).join(file).display());
        }
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(SOURCES);
    match git(&status) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=MOE_VLA_LIBPYTHON");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rustc-env=MOE_VLA_REVISION={}", revision());
    // The physics world (feature `physics`): binaries and tests find the libmujoco.so.3.17.0 that
    // mujoco-rs linked (MUJOCO_DYNAMIC_LINK_DIR, scripts/physics_env.sh) without LD_LIBRARY_PATH.
    println!("cargo:rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    if std::env::var_os("CARGO_FEATURE_PHYSICS").is_some() {
        if let Ok(dir) = std::env::var("MUJOCO_DYNAMIC_LINK_DIR") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    if std::env::var_os("CARGO_FEATURE_ROS").is_none() {
        return;
    }
    if let Ok(spec) = std::env::var("MOE_VLA_LIBPYTHON") {
        if let Some((dir, name)) = spec.rsplit_once(':') {
            println!("cargo:rustc-link-search=native={dir}");
            // link-arg rather than link-lib, so test binaries and every binary get it too.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-l{name},--as-needed");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
