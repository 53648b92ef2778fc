//! `mxguard tsig-keygen`: the secret file it writes is what `[[secondary]]` reads, and the BIND
//! snippet it prints is a key file `dig -k` signs a zone transfer with.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::{DomainSpec, Project, mxguard};

#[test]
fn tsig_keygen_secret_authorizes_a_transfer_and_its_snippet_signs_it() {
    let out = mxguard(&["tsig-keygen", "xfr-key"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        data_encoding::BASE64
            .decode(printed.trim().as_bytes())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        mxguard(&["tsig-keygen", "bad name!"]).status.code(),
        Some(1)
    );

    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let secret = p.path("xfr.tsig");
    let out = mxguard(&["tsig-keygen", "xfr-key", "--out", secret.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never over an existing file.
    let again = mxguard(&["tsig-keygen", "xfr-key", "--out", secret.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // The BIND snippet is a key file for dig.
    let bind = text
        .split("# BIND (named.conf):\n")
        .nth(1)
        .expect("BIND snippet")
        .to_string();
    let keyfile = p.path("xfr.key");
    std::fs::write(&keyfile, bind).unwrap();
    assert!(
        text.contains("# Knot (knot.conf):\nkey:\n  - id: xfr-key.\n    algorithm: hmac-sha256\n")
    );

    p.append_config(&format!(
        "[[secondary]]\nname = \"keyed\"\naddress = \"127.0.0.1:{}\"\ntsig_key_name = \"xfr-key\"\ntsig_secret_file = \"{}\"\n",
        crate::harness::free_port(),
        secret.display()
    ));
    let d = p.start();
    let axfr = |extra: &[&str]| {
        let out = Command::new(crate::dns::dig())
            .args([
                "@127.0.0.1",
                "-p",
                &d.dns.to_string(),
                "+time=3",
                "+tries=1",
            ])
            .args(extra)
            .args(["example.com", "AXFR"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // From an address that is not the secondary's: only the key lets it transfer.
    let signed = axfr(&["-b", "127.0.0.2", "-k", keyfile.to_str().unwrap()]);
    assert!(signed.contains("_mta-sts.example.com."), "{signed}");
    assert!(!signed.contains("failed"), "{signed}");
    let unsigned = axfr(&["-b", "127.0.0.2"]);
    assert!(!unsigned.contains("_mta-sts.example.com."), "{unsigned}");
}
