//! `vpcep demo` runs the user guide's scenario end to end and reports; in both substrates
//! (netns only as root, required in CI).

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .arg("demo")
        .args(args)
        .env("VPCEP_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_demo_passes_on_loopback() {
    // 127.230+: clear of the blocks of the in-process test servers.
    let (ok, text) = demo(&["--loopback-base", "230"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("vpcep demo report (Loopback substrate)"),
        "{text}"
    );
    assert!(text.contains("7 checks passed"), "{text}");
    assert!(
        text.contains("a request through the endpoint reached the backend"),
        "{text}"
    );
    assert!(text.contains("resolves to the node IP"), "{text}");
}

#[test]
fn the_demo_passes_in_namespaces() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
            "VPCEP_REQUIRE_NETNS is set, but the tests do not run as root"
        );
        eprintln!("skipped: the netns demo needs root");
        return;
    }
    let (ok, text) = demo(&["--substrate", "netns"]);
    assert!(ok, "{text}");
    assert!(text.contains("9 checks passed"), "{text}");
    assert!(
        text.contains("the provider side cannot reach into the consumer VPC"),
        "{text}"
    );
    assert!(text.contains("resolves to the node IP"), "{text}");
}
