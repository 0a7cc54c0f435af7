//! The moe_vla ROS 2 node. `moe_vla_node --list-params` prints the declared parameters and exits;
//! everything else is ROS arguments (`--ros-args -p ... --params-file ... -r ...`).

use std::process::ExitCode;

fn main() -> ExitCode {
    // As in the CLI: candle would split batch-1 matrix products over every core, which costs more
    // than it gains; the policy's own pool runs experts side by side instead.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let args: Vec<String> = std::env::args().skip(1).take_while(|a| a != "--ros-args").collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{} {}\nusage: moe_vla_node [--list-params] [--ros-args -p NAME:=VALUE --params-file FILE -r FROM:=TO]",
            moe_vla::ros::NODE_NAME,
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--list-params") {
        for (name, description) in moe_vla::ros::NodeParams::declared() {
            println!("{name}\t{description}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(other) = args.first() {
        eprintln!("moe_vla_node: unknown argument '{other}' (ROS arguments go after --ros-args)");
        return ExitCode::from(2);
    }
    match moe_vla::ros::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let reason = anyhow::Error::from(e);
            eprintln!("moe_vla_node: {}", format!("{reason:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
