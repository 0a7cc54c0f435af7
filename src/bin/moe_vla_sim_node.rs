//! The task world as a ROS 2 node: camera and instruction out, cmd_vel / gait_command /
//! decisions in, one EpisodeOutcome per episode. `--list-params` prints the declared parameters.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).take_while(|a| a != "--ros-args").collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{} {}\nusage: moe_vla_sim_node [--list-params] [--ros-args -p NAME:=VALUE --params-file FILE -r FROM:=TO]",
            moe_vla::ros::SIM_NODE_NAME,
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--list-params") {
        for p in moe_vla::ros::SimParams::declared() {
            println!("{}\t{}", p.name, p.description);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(other) = args.first() {
        eprintln!("moe_vla_sim_node: unknown argument '{other}' (ROS arguments go after --ros-args)");
        return ExitCode::from(2);
    }
    match moe_vla::ros::sim_node::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let reason = anyhow::Error::from(e);
            eprintln!("moe_vla_sim_node: {}", format!("{reason:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
