//! IXFR (RFC 1995): a knotd secondary that has the zone gets a change as an incremental
//! transfer from mxguard's journal, and ends up with exactly the zone mxguard serves.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::dns::{Proc, dig, run, tool};
use crate::harness::{DomainSpec, Project, free_port, wait_for};

fn serial_at(port: u16) -> Option<u32> {
    run(Command::new(dig()).args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+norec",
        "+short",
        "+time=2",
        "+tries=1",
        "example.com",
        "SOA",
    ]))
    .1
    .split_whitespace()
    .nth(2)
    .and_then(|s| s.parse().ok())
}

/// The zone as sorted presentation lines (TTLs and spacing as dig prints them).
fn axfr(port: u16) -> Vec<String> {
    let out = run(Command::new(dig()).args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+nocmd",
        "+nostats",
        "+nocomments",
        "+onesoa",
        "example.com",
        "AXFR",
    ]))
    .1;
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_knot_secondary_takes_a_change_by_ixfr_and_serves_the_same_zone() {
    let kport = free_port();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    p.append_config(&format!(
        "[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{kport}\"\n"
    ));
    let d = p.start();
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().display().to_string();
    fs::create_dir_all(dir.path().join("db")).unwrap();
    let log = dir.path().join("knot.log");
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{kport}\n    rundir: \"{dd}\"\nlog:\n  - target: \"{}\"\n    any: info\ndatabase:\n    storage: \"{dd}/db\"\nremote:\n  - id: primary\n    address: 127.0.0.1@{}\nacl:\n  - id: notify_from_primary\n    address: 127.0.0.1\n    action: notify\n  - id: xfr\n    address: 127.0.0.1\n    action: transfer\ntemplate:\n  - id: default\n    storage: \"{dd}/zones\"\nzone:\n  - domain: example.com\n    master: primary\n    acl: [notify_from_primary, xfr]\n",
        log.display(),
        d.dns
    );
    let path = dir.path().join("knot.conf");
    fs::write(&path, &conf).unwrap();
    let _knot = Proc(
        Command::new(tool("knotd", "knot"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let first = serial_at(d.dns).unwrap();
    wait_for("knot to have the zone", Duration::from_secs(30), || {
        (serial_at(kport) == Some(first)).then_some(())
    });
    // A policy change: a new policy id, a new serial; knot is notified and asks for IXFR.
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"enforce\"\nmax_age = 604800\n",
    )
    .unwrap();
    d.reload();
    let second = serial_at(d.dns).unwrap();
    assert_ne!(second, first);
    wait_for("knot to take the change", Duration::from_secs(30), || {
        (serial_at(kport) == Some(second)).then_some(())
    });
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("IXFR, incoming") && l.contains("finished")),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.contains("fallback to AXFR")),
        "{text}"
    );
    // The secondary's zone is exactly mxguard's.
    assert_eq!(axfr(kport), axfr(d.dns));
}
