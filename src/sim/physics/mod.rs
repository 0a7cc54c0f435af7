//! The physics backend of the task world (cargo feature `physics`): a Unitree Go2 in MuJoCo,
//! walking under a learned velocity-tracking policy run in candle.
//!
//! Its parts (MuJoCo 3.17.0, the Go2 model, the policy's weights) are not in the repository:
//! `scripts/setup_physics.sh` installs them, pinned and checksum-checked, into [`parts_dir`]. The
//! node (`moe_vla_node`) never builds this module: a robot never links MuJoCo.

pub mod camera;
pub mod go2;
pub mod policy;
pub mod scene;
#[cfg(test)]
mod tests;
pub mod world;
#[cfg(test)]
mod world_tests;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use camera::{HeadCamera, ViewCamera};
pub use go2::{Go2, Go2Command, HEIGHT_OFFSET_RANGE, PHYSICS_STEP_S, TICK_S};
pub use policy::{crouch_pose, Observation, WalkingPolicy, ACTION_SCALE, DEFAULT_POSE, JOINT_NAMES, OBS_SIZE};
pub use scene::{scene_mjcf, SceneGeom, SceneMjcf};
pub use world::{go2_height, PhysicsWorld, HEIGHT_SCALE};

/// The command that installs the parts, named by every error about a missing one.
pub const SETUP_COMMAND: &str = "scripts/setup_physics.sh";
/// Overrides [`parts_dir`].
pub const PARTS_ENV: &str = "MOE_VLA_PHYSICS_DIR";
/// The checksums `scripts/setup_physics.sh` checks the parts against (paths relative to
/// [`parts_dir`]).
const FILE_SUMS: &str = include_str!("../../../physics/files.sha256");

#[derive(Debug, thiserror::Error)]
pub enum PhysicsError {
    #[error("{} is missing: install the physics world's parts with {SETUP_COMMAND}", path.display())]
    Missing { path: PathBuf },
    #[error("{}: SHA-256 {actual}, expected {expected}: reinstall the physics world's parts with {SETUP_COMMAND}", path.display())]
    Checksum { path: PathBuf, actual: String, expected: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("walking policy: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("MuJoCo: {0}")]
    Mujoco(String),
    #[error("head camera: {0}")]
    Render(String),
    #[error("{0}")]
    Invalid(String),
}

/// Where the parts are: `$MOE_VLA_PHYSICS_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/moe_vla/physics`
/// (as `scripts/setup_physics.sh` and `scripts/physics_env.sh` resolve it).
pub fn parts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PARTS_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("moe_vla/physics")
}

/// A part of [`parts_dir`] that must exist.
pub fn part(relative: &str) -> Result<PathBuf, PhysicsError> {
    let path = parts_dir().join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(PhysicsError::Missing { path })
    }
}

/// Reads a part and checks it against its pinned checksum (`physics/files.sha256`).
pub fn read_checked(relative: &str) -> Result<Vec<u8>, PhysicsError> {
    let path = part(relative)?;
    let bytes = std::fs::read(&path).map_err(|source| PhysicsError::Io { path: path.clone(), source })?;
    let expected = pinned_sha256(relative).ok_or_else(|| PhysicsError::Invalid(format!("no checksum pinned for {relative}")))?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if actual != expected {
        return Err(PhysicsError::Checksum { path, actual, expected: expected.to_string() });
    }
    Ok(bytes)
}

fn pinned_sha256(relative: &str) -> Option<&'static str> {
    FILE_SUMS.lines().find_map(|line| {
        let (sum, file) = line.split_once("  ")?;
        (file.trim() == relative).then_some(sum)
    })
}

/// `path`, or the error naming the set-up command when it is missing.
pub fn require(path: &Path) -> Result<(), PhysicsError> {
    if path.exists() {
        Ok(())
    } else {
        Err(PhysicsError::Missing { path: path.to_path_buf() })
    }
}
