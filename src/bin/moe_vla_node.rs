//! The moe_vla ROS 2 node. `moe_vla_node --list-params` prints the declared parameters and exits;
//! `--print-params yaml|markdown` prints them as config/params.yaml or docs/node.md's table;
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
            "{} {}\nusage: moe_vla_node [--list-params | --print-params yaml|markdown] [--ros-args -p NAME:=VALUE --params-file FILE -r FROM:=TO]",
            moe_vla::ros::NODE_NAME,
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--list-params") {
        for p in moe_vla::ros::NodeParams::declared() {
            println!("{}\t{}", p.name, p.description);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(i) = args.iter().position(|a| a == "--print-params") {
        match args.get(i + 1).map(String::as_str) {
            Some("yaml") => print!("{}", moe_vla::ros::params::params_yaml()),
            Some("markdown") => print!("{}", moe_vla::ros::params::params_markdown()),
            _ => {
                eprintln!("moe_vla_node: --print-params takes yaml or markdown");
                return ExitCode::from(2);
            }
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
