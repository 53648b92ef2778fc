//! The catalog zone (RFC 9432): a knotd secondary configured once, with only mxguard's
//! catalog, serves every domain mxguard serves, and picks up a domain added by SIGHUP.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::dns::{Proc, dig, run, tool};
use crate::harness::{DomainSpec, Project, free_port, mxguard, wait_for};

fn soa_at(port: u16, zone: &str) -> String {
    run(Command::new(dig()).args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+norec",
        "+short",
        "+time=2",
        "+tries=1",
        zone,
        "SOA",
    ]))
    .1
}

#[test]
fn a_knot_catalog_consumer_serves_every_domain_and_picks_up_a_new_one() {
    let kport = free_port();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    p.append_config(&format!(
        "[catalog]\nzone = \"catalog.test\"\n\n[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{kport}\"\n"
    ));
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");
    let d = p.start();
    // The catalog itself, as mxguard serves it.
    let cat = run(Command::new(dig()).args([
        "@127.0.0.1",
        "-p",
        &d.dns.to_string(),
        "+norec",
        "catalog.test",
        "AXFR",
    ]))
    .1;
    assert!(
        cat.contains("version.catalog.test.") && cat.contains("\"2\""),
        "{cat}"
    );
    assert!(
        cat.contains(".zones.catalog.test.") && cat.contains("PTR\texample.com."),
        "{cat}"
    );

    // knotd knows only the catalog.
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().display().to_string();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{kport}\n    rundir: \"{dd}\"\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: \"{dd}/db\"\nremote:\n  - id: primary\n    address: 127.0.0.1@{}\nacl:\n  - id: notify_from_primary\n    address: 127.0.0.1\n    action: notify\ntemplate:\n  - id: default\n    storage: \"{dd}/zones\"\n  - id: member\n    storage: \"{dd}/zones\"\n    master: primary\n    acl: notify_from_primary\nzone:\n  - domain: catalog.test\n    master: primary\n    acl: notify_from_primary\n    catalog-role: interpret\n    catalog-template: member\n",
        d.dns
    );
    fs::create_dir_all(dir.path().join("db")).unwrap();
    let path = dir.path().join("knot.conf");
    fs::write(&path, &conf).unwrap();
    let (ok, out) = run(Command::new(tool("knotc", "knot"))
        .arg("-c")
        .arg(&path)
        .arg("conf-check"));
    assert!(ok, "knotc conf-check: {out}");
    let _knot = Proc(
        Command::new(tool("knotd", "knot"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "knot to serve example.com from the catalog",
        Duration::from_secs(30),
        || {
            soa_at(kport, "example.com")
                .contains("hostmaster.example.com.")
                .then_some(())
        },
    );

    // A new domain by SIGHUP: the secondary serves it without any change of its own.
    fs::write(
        p.path("policies/example.org.toml"),
        "mode = \"testing\"\nmax_age = 86400\n",
    )
    .unwrap();
    fs::write(
        p.path("zones/example.org.zone"),
        "$ORIGIN example.org.\n$TTL 300\n@ IN SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300\n@ IN NS ns1.example.org.\nns1 IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n@ IN MX 10 mx1.example.org.\nmx1 IN A 127.0.0.1\n",
    )
    .unwrap();
    p.append_config("[[domain]]\nname = \"example.org\"\nmx = [\"mx1.example.org\"]\n");
    d.reload();
    wait_for(
        "knot to serve the new domain",
        Duration::from_secs(30),
        || {
            soa_at(kport, "example.org")
                .contains("hostmaster.example.org.")
                .then_some(())
        },
    );
    assert!(soa_at(kport, "example.com").contains("hostmaster.example.com."));
}
