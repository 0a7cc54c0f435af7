//! Pictures of the physics world: the clean expert plays a scenario of the task world in MuJoCo
//! until it is about a metre from its goal, then the Go2's head camera (256x256, the robot hidden)
//! and a third-person view (320x240) are saved as PNG.
//!
//! ```bash
//! source scripts/physics_env.sh
//! cargo run --release --features physics --example physics_snapshot -- --family crawl --seed 4 --out docs/images
//! ```
//! writes `physics_head_camera.png` and `physics_third_person.png` into `--out`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

use moe_vla::action::ActionSpace;
use moe_vla::model::config::quadruped_action_space;
use moe_vla::sim::physics::{PhysicsWorld, ViewCamera};
use moe_vla::sim::{sample_task, CleanExpert, Driver, Goal, Observation, TaskFamily, TaskWorld, WorldCommand};

fn main() -> Result<()> {
    let (mut family, mut seed, mut out) = (TaskFamily::Crawl, 4u64, PathBuf::from("docs/images"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--family" => family = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--out" => out = PathBuf::from(value),
            _ => bail!("unknown option {arg} (--family, --seed, --out)"),
        }
    }
    let scenario = sample_task(family, false, &mut StdRng::seed_from_u64(seed))?;
    let goal = match scenario.goal {
        Goal::Reach { object } => scenario.scene.objects[object].footprint().center(),
        Goal::Pass { wall_x, gap_y } => (wall_x, gap_y),
        Goal::Stay => (scenario.start.x, scenario.start.y),
    };
    println!("{family} seed {seed}: \"{}\"", scenario.instruction);
    let mut world = PhysicsWorld::new(scenario)?;
    let mut expert = CleanExpert::new(ActionSpace::new(&quadruped_action_space())?);
    expert.reset(seed);
    let mut pixels = Vec::new();
    for step in 0..100 {
        let pose = world.pose();
        if (pose.x - goal.0).hypot(pose.y - goal.1) < 1.1 {
            break;
        }
        world.render(64, &mut pixels)?;
        let obs = Observation {
            pixels: &pixels,
            width: 64,
            height: 64,
            instruction: &world.scenario().instruction.clone(),
            world: &world,
            time_s: f64::from(step) * 0.2,
        };
        let command = expert.decide(&obs)?.command;
        let command = if command.terminate {
            WorldCommand::Terminate
        } else {
            WorldCommand::Move { twist: command.twist, gait: command.gait }
        };
        if let Some(outcome) = world.step(&command) {
            println!("the episode ended before the picture: {outcome:?}");
            break;
        }
    }
    std::fs::create_dir_all(&out)?;
    world.render(256, &mut pixels)?;
    let head = out.join("physics_head_camera.png");
    image::save_buffer(&head, &pixels, 256, 256, image::ExtendedColorType::Rgb8)?;
    let pose = world.pose();
    let [x, y, _] = world.go2().position();
    let mut view = ViewCamera::new(world.go2(), (320, 240), [x, y, 0.25], 2.6, f64::from(pose.yaw.to_degrees()) + 35.0, -25.0)?;
    let third = out.join("physics_third_person.png");
    let rgb = view.render(world.go2_mut())?;
    image::save_buffer(&third, &rgb, 320, 240, image::ExtendedColorType::Rgb8)?;
    println!("robot at ({:.2}, {:.2}), yaw {:.2}: wrote {} and {}", pose.x, pose.y, pose.yaw, head.display(), third.display());
    Ok(())
}
