//! The `moe_vla` binary: init, info and bench, end to end.

use std::process::Command;

fn moe_vla(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moe_vla")).args(args).output().expect("binary runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn init_info_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let model = model.to_str().unwrap();
    let instructions = concat!(env!("CARGO_MANIFEST_DIR"), "/data/instructions.txt");

    let out = moe_vla(&["init", "--preset", "tiny", "--instructions", instructions, "--out", model]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("UNTRAINED"));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.path().join("m").join(f).is_file(), "{f}");
    }
    let refused = moe_vla(&["init", "--preset", "tiny", "--instructions", instructions, "--out", model]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("--force"));

    let info = moe_vla(&["info", model]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info = text(&info.stdout);
    for needle in ["parameters total", "active per token", "one frame per 0.2 s", "x_vel", "stance_width", "UNTRAINED"] {
        assert!(info.contains(needle), "{needle} missing from:\n{info}");
    }

    let bench = moe_vla(&["bench", model, "--threads", "1", "--runs", "3", "--warmup", "1", "--frame", "64x48", "--json"]);
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let report: serde_json::Value = serde_json::from_slice(&bench.stdout).expect("one JSON object");
    for key in [
        "params_total",
        "params_active_per_token",
        "threads",
        "cached_median_ms",
        "cached_p99_ms",
        "uncached_median_ms",
        "uncached_p99_ms",
    ] {
        assert!(report.get(key).is_some_and(|v| v.is_number()), "{key} in {report}");
    }
    assert_eq!(report["threads"], 1);
    let total = report["params_total"].as_u64().unwrap();
    let active = report["params_active_per_token"].as_u64().unwrap();
    assert!(active < total, "top-2 of 8 experts runs fewer parameters than exist");
    assert!(report["cached_median_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_arguments_fail_with_a_reason() {
    let out = moe_vla(&["info", "/nonexistent/model"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("config.json is missing"), "{}", text(&out.stderr));
    let out = moe_vla(&["bench", "--preset", "huge"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown preset"));
}
