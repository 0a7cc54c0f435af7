//! The Go2's head camera, rendered by MuJoCo offscreen through EGL (Mesa renders without a GPU).
//!
//! The robot's own meshes (geom group 2) and collision shapes (group 3) are hidden from it: they
//! would cost most of a frame's time even unseen. Shadows and anti-aliasing are off
//! ([`super::go2::compose_mjcf`]).

use mujoco_rs::prelude::*;
use mujoco_rs::renderer::MjRenderer;

use super::go2::{Go2, HEAD_CAMERA};
use super::{PhysicsError, SETUP_COMMAND};

/// Geom groups of the robot's visual meshes and collision shapes in go2.xml.
pub(crate) const ROBOT_GROUPS: [usize; 2] = [2, 3];

/// An offscreen renderer of the head camera.
pub struct HeadCamera {
    renderer: MjRenderer,
    width: usize,
    height: usize,
}

impl HeadCamera {
    /// A `width` x `height` RGB head camera for `go2`'s model. Needs EGL, e.g. Mesa's
    /// `libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0`, which the set-up installs.
    pub fn new(go2: &Go2, width: usize, height: usize) -> Result<Self, PhysicsError> {
        let model = go2.model();
        let camera = model
            .name_to_id(MjtObjBase::mjOBJ_CAMERA, HEAD_CAMERA)
            .ok_or_else(|| PhysicsError::Invalid(format!("no camera {HEAD_CAMERA} in the model")))?;
        let mut opts = MjvOption::default();
        for group in ROBOT_GROUPS {
            opts.geomgroup[group] = 0;
        }
        let renderer = MjRenderer::builder()
            .width(width as u32)
            .height(height as u32)
            .camera(MjvCamera::new_fixed(camera))
            .opts(opts)
            .build(model)
            .map_err(|e| {
                PhysicsError::Render(format!(
                    "{e:?}: headless rendering needs EGL (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0; \
                     {SETUP_COMMAND} installs them)"
                ))
            })?;
        Ok(Self { renderer, width, height })
    }

    /// (width, height) of a frame.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Renders the current state: RGB bytes, rows top to bottom.
    pub fn render(&mut self, go2: &mut Go2) -> Result<Vec<u8>, PhysicsError> {
        self.renderer.sync_data(go2.data_mut()).map_err(|e| PhysicsError::Render(format!("{e:?}")))?;
        self.renderer.render().map_err(|e| PhysicsError::Render(format!("{e:?}")))?;
        self.renderer.rgb_flat().map(<[u8]>::to_vec).ok_or_else(|| PhysicsError::Render("no RGB buffer".into()))
    }
}

/// An offscreen third-person view of the scene with the robot drawn (for figures): a free camera
/// looking at `lookat` from `distance` m, at `azimuth` and `elevation` degrees.
pub struct ViewCamera {
    renderer: MjRenderer,
}

impl ViewCamera {
    pub fn new(
        go2: &Go2,
        (width, height): (usize, usize),
        lookat: [f64; 3],
        distance: f64,
        azimuth: f64,
        elevation: f64,
    ) -> Result<Self, PhysicsError> {
        let model = go2.model();
        let mut camera = MjvCamera::new_free(model);
        camera.lookat = lookat;
        camera.distance = distance;
        camera.azimuth = azimuth;
        camera.elevation = elevation;
        let renderer = MjRenderer::builder()
            .width(width as u32)
            .height(height as u32)
            .camera(camera)
            .build(model)
            .map_err(|e| PhysicsError::Render(format!("{e:?}")))?;
        Ok(Self { renderer })
    }

    /// Renders the current state: RGB bytes, rows top to bottom.
    pub fn render(&mut self, go2: &mut Go2) -> Result<Vec<u8>, PhysicsError> {
        self.renderer.sync_data(go2.data_mut()).map_err(|e| PhysicsError::Render(format!("{e:?}")))?;
        self.renderer.render().map_err(|e| PhysicsError::Render(format!("{e:?}")))?;
        self.renderer.rgb_flat().map(<[u8]>::to_vec).ok_or_else(|| PhysicsError::Render("no RGB buffer".into()))
    }
}
