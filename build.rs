//! Links libpython into ROS binaries when ROS 2 comes from the PyPI wheels: their librcl loads
//! `*_rosidl_generator_py` libraries that need CPython's symbols. `scripts/ros_env.sh` sets
//! MOE_VLA_LIBPYTHON to "<libdir>:<name>" in that case; ROS 2 from apt needs nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=MOE_VLA_LIBPYTHON");
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
