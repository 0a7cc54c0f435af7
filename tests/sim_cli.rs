//! `moe_vla collect`, `moe_vla bag episodes` on what it wrote, and `moe_vla eval --policy random`,
//! end to end.

use std::process::Command;

fn moe_vla(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moe_vla")).args(args).output().expect("binary runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn collect_then_eval_a_random_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("episodes");
    let out = out.to_str().unwrap();
    let args = ["collect", "--episodes", "4", "--out", out, "--seed", "3", "--image-size", "16"];
    let collected = moe_vla(&[&args[..], &["--families", "go_to,crawl"]].concat());
    assert!(collected.status.success(), "{}", text(&collected.stderr));
    let summary = text(&collected.stdout);
    assert!(summary.contains("collected 4 episodes") && summary.contains("episodes/min"), "{summary}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("episodes/collect.json")).unwrap()).unwrap();
    assert_eq!(report["episodes"], 4);
    assert_eq!(report["per_family"]["crawl"]["episodes"], 2);
    for i in 0..4 {
        assert!(dir.path().join(format!("episodes/episode_{i:06}/metadata.yaml")).is_file());
    }

    // The digest of the bags agrees with the collection's own report.
    let digest = moe_vla(&["bag", "episodes", "--json", out]);
    assert!(digest.status.success(), "{}", text(&digest.stderr));
    let lines: Vec<serde_json::Value> =
        text(&digest.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 4);
    for family in ["go_to", "crawl"] {
        let of_family: Vec<&serde_json::Value> = lines.iter().filter(|l| l["family"] == family).collect();
        let successes = of_family.iter().filter(|l| l["success"] == true).count();
        assert_eq!(of_family.len(), 2, "{family}");
        assert_eq!(serde_json::json!(successes), report["per_family"][family]["successes"], "{family}");
    }
    let sum = |key: &str| lines.iter().map(|l| l[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(serde_json::json!(sum("steps")), report["steps"]);
    assert_eq!(sum("commands"), sum("steps"), "one command per step");
    for line in &lines {
        assert!(line["driver"].as_str().is_some_and(|d| d.starts_with("expert")), "{line}");
    }
    let table = moe_vla(&["bag", "episodes", out]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(table.contains("episode_000000") && table.contains("crawl") && table.contains("go_to"), "{table}");
    let empty = tempfile::tempdir().unwrap();
    let none = moe_vla(&["bag", "episodes", empty.path().to_str().unwrap()]);
    assert!(!none.status.success() && text(&none.stderr).contains("no bags"), "{}", text(&none.stderr));

    let bad = moe_vla(&["collect", "--episodes", "1", "--out", out, "--families", "fly"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("unknown task family"));

    let eval = moe_vla(&["eval", "--policy", "random", "--episodes", "12", "--seed", "1", "--image-size", "16", "--json"]);
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).expect("one JSON object");
    for key in [
        "episodes",
        "success_rate",
        "per_family",
        "per_family_seen",
        "per_family_held_out",
        "seen_success_rate",
        "held_out_success_rate",
        "outcomes",
        "policy",
        "seed",
    ] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }
    assert_eq!(report["episodes"], 12);
    assert_eq!(report["policy"], "random");
    assert_eq!(report["per_family"].as_object().unwrap().len(), 6);
    let table = moe_vla(&["eval", "--policy", "random", "--episodes", "6", "--image-size", "16"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    assert!(text(&table.stdout).contains("held-out"));
    let missing = moe_vla(&["eval", "--episodes", "6"]);
    assert!(!missing.status.success(), "--model is required for the model policy");
}

#[test]
fn eval_templates_keep_the_scenes() {
    let run = |extra: &[&str]| -> serde_json::Value {
        let args = ["eval", "--policy", "random", "--episodes", "24", "--seed", "7", "--image-size", "16", "--json"];
        let out = moe_vla(&[&args[..], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    };
    let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/config/novel_templates.json");
    let (plain, novel) = (run(&[]), run(&["--templates", templates]));
    let episodes = |r: &serde_json::Value| r["per_episode"].as_array().unwrap().clone();
    for (a, b) in episodes(&plain).iter().zip(&episodes(&novel)) {
        // A random policy ignores the instruction: the same scenes and seeds give the same outcomes.
        for key in ["family", "held_out", "success", "reason"] {
            assert_eq!(a[key], b[key]);
        }
        assert_ne!(a["instruction"], b["instruction"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"go_to": ["go somewhere"]}"#).unwrap();
    let out = moe_vla(&["eval", "--policy", "random", "--episodes", "1", "--templates", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("lacks {o}"), "{}", text(&out.stderr));
}
