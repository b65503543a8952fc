//! `shadowgate reference build` and `replay` as a user runs them: `.npy` files written by
//! numpy, the reference JSON read back, a null stream and planted shifts replayed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{self, Component};

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

/// numpy writes `name.npy`: `rows` × `dim` float32 N(0, 1) draws from `seed`, then
/// `transform` (a numpy expression in `x`).
fn npy(dir: &Path, name: &str, seed: u64, rows: usize, dim: usize, transform: &str) {
    let script = format!(
        "import numpy as np\nx = np.random.default_rng({seed}).standard_normal(({rows}, {dim})).astype(np.float32)\n\
         x = ({transform}).astype(np.float32)\nnp.save({:?}, x)",
        dir.join(format!("{name}.npy")).display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shadowgate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn build_then_replay_a_null_stream_and_planted_shifts() {
    if !support::require(&[Component::Python(&["numpy"])]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    npy(d, "reference", 1, 6000, 32, "x");
    npy(d, "null", 2, 600, 32, "x");
    npy(d, "shifted", 3, 600, 32, "x + 0.3");
    npy(d, "collapsed", 4, 600, 32, "x * 0.6");
    npy(d, "narrow", 5, 600, 8, "x");
    let reference = d.join("ref.json");
    let (code, out, err) = shadowgate(&[
        "reference",
        "build",
        "--logs",
        d.join("reference.npy").to_str().unwrap(),
        "--model",
        "m",
        "--out",
        reference.to_str().unwrap(),
        "--window",
        "50",
        // A false alarm within the 550 samples after the window fills: at most 5 %.
        "--ert",
        "11000",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("from 6000 embeddings"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(
        (r["dim"].as_u64(), r["model"].as_str()),
        (Some(32), Some("m"))
    );
    assert!(r["bootstrap_windows"].as_u64().unwrap() >= 220_000, "{r}");
    let replay = |name: &str| -> Value {
        let (code, out, err) = shadowgate(&[
            "reference",
            "replay",
            "--reference",
            reference.to_str().unwrap(),
            "--input",
            d.join(format!("{name}.npy")).to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{name}: {err}");
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let null = replay("null");
    eprintln!("null: {null}");
    assert_eq!(null["samples"], 600);
    assert_eq!(null["first_alarm"], Value::Null, "{null}");
    assert!(null["max_score"].as_f64().unwrap() < 1.0);
    assert_eq!(null["reference_id"], r["id"]);
    for shifted in ["shifted", "collapsed"] {
        let s = replay(shifted);
        eprintln!("{shifted}: {s}");
        // Alarmed by the time the first window is full, or soon after.
        assert!(s["first_alarm"].as_u64().unwrap() < 150, "{shifted}: {s}");
    }
    // Another dimension: refused, with what to do.
    let (code, _, err) = shadowgate(&[
        "reference",
        "replay",
        "--reference",
        reference.to_str().unwrap(),
        "--input",
        d.join("narrow.npy").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains("dimension 32")
            && err.contains("dimension 8")
            && err.contains("reference build"),
        "{err}"
    );
    // Too few embeddings: a clear error, nothing written.
    let (code, _, err) = shadowgate(&[
        "reference",
        "build",
        "--logs",
        d.join("narrow.npy").to_str().unwrap(),
        "--model",
        "m",
        "--out",
        d.join("small.json").to_str().unwrap(),
        "--window",
        "200",
    ]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("need at least 800"), "{err}");
    assert!(!d.join("small.json").exists());
}
