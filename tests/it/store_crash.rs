//! A state write killed midway leaves the old or the new file, never a torn one.

use std::process::{Command, Stdio};
use std::time::Duration;

use mxguard::state_dir::{SECRET_MODE, write_atomic};

const CHILD_ENV: &str = "MXGUARD_TEST_WRITER_PATH";
const SIZE: usize = 1 << 20;

/// In the child role: writes 1 MiB files of one repeated byte, forever, until killed.
fn writer_loop(path: &str) -> ! {
    let path = std::path::Path::new(path);
    let mut b: u8 = 0;
    loop {
        write_atomic(path, &vec![b; SIZE], SECRET_MODE).unwrap();
        b = b.wrapping_add(1);
    }
}

#[test]
fn atomic_write_survives_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        writer_loop(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.bin");
    for round in 0..12u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store_crash::atomic_write_survives_sigkill",
                "--nocapture",
            ])
            .env(CHILD_ENV, &target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::harness::wait_for("first write", Duration::from_secs(20), || {
            target.exists().then_some(())
        });
        // Kill at a different point of the write cycle each round.
        std::thread::sleep(Duration::from_millis(7 * round + 3));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let data = std::fs::read(&target).unwrap();
        assert_eq!(
            data.len(),
            SIZE,
            "round {round}: torn file of {} bytes",
            data.len()
        );
        assert!(
            data.iter().all(|&x| x == data[0]),
            "round {round}: mixed content"
        );
    }
}
