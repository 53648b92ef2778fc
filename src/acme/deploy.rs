//! Deployment of an MX certificate to the MTA: the files (atomically, with modes and owner,
//! users and groups through NSS) and the reload command in a process group of its own, with a
//! timeout, never two for one MX at once. Decides nothing about when (the manager does).

use std::path::Path;
use std::time::Duration;

use super::manager::{CertState, Deploy, sha256_hex};
use crate::state_dir as store;

/// Resolves `user[:group]` (names or numeric ids) through the system's user database (NSS:
/// /etc/passwd and /etc/group, LDAP, systemd-userdbd, …). Without a group, the user's primary
/// group.
pub(crate) fn resolve_owner(spec: &str) -> Result<(u32, u32), OwnerError> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = match user.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id))
            .map_err(|e| OwnerError::Lookup {
                name: id.to_string(),
                reason: e.to_string(),
            })?
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .unwrap_or((id, id)),
        Err(_) => User::from_name(user)
            .map_err(|e| OwnerError::Lookup {
                name: user.to_string(),
                reason: e.to_string(),
            })?
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .ok_or_else(|| OwnerError::UnknownUser(user.to_string()))?,
    };
    let gid = match group {
        None => user.1,
        Some(g) => match g.parse::<u32>() {
            Ok(id) => Gid::from_raw(id).as_raw(),
            Err(_) => Group::from_name(g)
                .map_err(|e| OwnerError::Lookup {
                    name: g.to_string(),
                    reason: e.to_string(),
                })?
                .map(|gr| gr.gid.as_raw())
                .ok_or_else(|| OwnerError::UnknownGroup(g.to_string()))?,
        },
    };
    Ok((user.0, gid))
}

/// Writes chain and key for the MTA (atomically, with modes and owner), then runs the reload
/// command with a timeout. On a failed command the new files stay (they are complete and
/// valid); the command is retried later.
///
/// The reload command runs in a process group of its own whose id is kept in `pid_file` while
/// it runs: a command left running by a daemon that died is killed before the next one starts
/// (never two for one MX at once), and a command that times out is killed with its children.
pub(crate) async fn deploy(
    d: &Deploy,
    chain_pem: &str,
    key_pem: &str,
    pid_file: &Path,
) -> Result<(), DeployError> {
    for (path, data, mode) in [
        (&d.cert_file, chain_pem.as_bytes(), d.cert_mode),
        (&d.key_file, key_pem.as_bytes(), d.key_mode),
    ] {
        if let Some(parent) = path.parent() {
            store::ensure_dir(parent)?;
        }
        store::write_atomic_owned(path, data, mode, d.owner)?;
    }
    let Some((prog, args)) = d.reload.split_first() else {
        return Ok(());
    };
    kill_leftover_reload(pid_file);
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| DeployError::Spawn {
        command: d.reload.clone(),
        source,
    })?;
    let group = child.id();
    if let Some(g) = group {
        let record = format!("{g} {}\n", process_start(g).unwrap_or_default());
        if let Err(e) = store::write_atomic(pid_file, record.as_bytes(), store::PUBLIC_MODE) {
            tracing::warn!(file = %pid_file.display(), err = %e, "cannot record the reload command's process group");
        }
    }
    let waited = tokio::time::timeout(d.reload_timeout, child.wait_with_output()).await;
    if waited.is_err()
        && let Some(g) = group
    {
        kill_group(g);
    }
    let _ = std::fs::remove_file(pid_file);
    let out = waited
        .map_err(|_| DeployError::Timeout {
            command: d.reload.clone(),
            after: d.reload_timeout,
        })?
        .map_err(|source| DeployError::Spawn {
            command: d.reload.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(DeployError::Failed {
            command: d.reload.clone(),
            status: out.status,
            stderr: stderr.trim().chars().take(500).collect(),
        });
    }
    Ok(())
}

/// When process `pid` started (field 22 of /proc/PID/stat), to tell it from a later process
/// with the same id; `None` where /proc has no such process.
pub(super) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn kill_group(group: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Ok(g) = i32::try_from(group) {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// Kills the reload command recorded in `pid_file` if that very process still runs (its
/// daemon died before it finished).
fn kill_leftover_reload(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let mut fields = text.split_whitespace();
    let group = fields.next().and_then(|g| g.parse::<u32>().ok());
    let started = fields.next().and_then(|s| s.parse::<u64>().ok());
    if let (Some(g), Some(t)) = (group, started)
        && process_start(g) == Some(t)
    {
        tracing::warn!(
            group = g,
            "a reload command of an earlier run is still running; killing it before the next one"
        );
        kill_group(g);
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Why a deployment to the MTA failed. The written files stay; the step is retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
    #[error(transparent)]
    Write(#[from] store::StoreError),
    #[error("reload command {command:?}: {source}")]
    Spawn {
        command: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("reload command {command:?} timed out after {after:?}")]
    Timeout {
        command: Vec<String>,
        after: Duration,
    },
    #[error("reload command {command:?} failed ({status}): {stderr}")]
    Failed {
        command: Vec<String>,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// A `user[:group]` that names no user or group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OwnerError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("looking up {name:?}: {reason}")]
    Lookup { name: String, reason: String },
}

/// What a deployment wrote, as a hex SHA-256: the chain, the files' paths, modes, owner
/// and the reload command. A change to any of them (a reload of the config) deploys again.
pub(crate) fn deployment_fingerprint(d: &Deploy, chain_pem: &str) -> String {
    let target = format!(
        "{}\0{}\0{:o}\0{:o}\0{:?}\0{:?}\0",
        d.cert_file.display(),
        d.key_file.display(),
        d.cert_mode,
        d.key_mode,
        d.owner,
        d.reload
    );
    sha256_hex(&[target.as_bytes(), chain_pem.as_bytes()].concat())
}

/// True unless `chain_pem` was deployed to `d` successfully and both files still exist.
pub(crate) fn needs_deploy(d: &Deploy, st: &CertState, chain_pem: &str) -> bool {
    st.deployed.as_deref() != Some(deployment_fingerprint(d, chain_pem).as_str())
        || st.deploy_error.is_some()
        || !d.cert_file.exists()
        || !d.key_file.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_numeric_and_root() {
        assert_eq!(resolve_owner("0:0").unwrap(), (0, 0));
        assert_eq!(resolve_owner("root").unwrap(), (0, 0));
        // Group names resolve (the /etc/group member list once made this "unknown group").
        assert_eq!(resolve_owner("root:root").unwrap(), (0, 0));
        assert!(resolve_owner("root:no-such-group-mxguard").is_err());
        assert!(resolve_owner("no-such-user-mxguard").is_err());
    }

    fn alive(pid: u32) -> bool {
        // A zombie (exited, not yet reaped) counts as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn a_reload_command_left_running_is_killed_before_the_next_and_a_slow_one_with_its_children()
     {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("reload.pid");
        let d = Deploy {
            cert_file: dir.path().join("mx.crt"),
            key_file: dir.path().join("mx.key"),
            owner: None,
            cert_mode: 0o644,
            key_mode: 0o600,
            reload: vec!["true".into()],
            reload_timeout: Duration::from_secs(10),
        };
        // A reload command of a daemon that died: its own process group, recorded.
        use std::os::unix::process::CommandExt;
        let mut left = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let g = left.id();
        std::fs::write(&pid_file, format!("{g} {}\n", process_start(g).unwrap())).unwrap();
        deploy(&d, "C", "K", &pid_file).await.unwrap();
        let status = left.wait().unwrap();
        assert!(
            !status.success(),
            "the leftover command was not killed: {status}"
        );
        assert!(!pid_file.exists());
        // A record of a process that is gone, or of another process with that id, kills nothing.
        std::fs::write(&pid_file, format!("{} 1\n", std::process::id())).unwrap();
        deploy(&d, "C", "K", &pid_file).await.unwrap();
        // A command that times out is killed with what it started.
        let marker = dir.path().join("child.pid");
        let slow = Deploy {
            reload: vec![
                "sh".into(),
                "-c".into(),
                format!("sleep 60 & echo $! > {}; wait", marker.display()),
            ],
            reload_timeout: Duration::from_millis(500),
            ..d
        };
        let err = deploy(&slow, "C", "K", &pid_file).await.unwrap_err();
        assert!(matches!(err, DeployError::Timeout { .. }), "{err}");
        let child: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(child) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(child), "the reload command's child survived");
    }

    #[tokio::test]
    async fn deploy_replaces_files_with_modes_and_reports_failing_reload() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("reloaded");
        let d = Deploy {
            cert_file: dir.path().join("tls/mx.crt"),
            key_file: dir.path().join("tls/mx.key"),
            owner: None,
            cert_mode: 0o644,
            key_mode: 0o600,
            reload: vec!["touch".into(), marker.to_string_lossy().into_owned()],
            reload_timeout: Duration::from_secs(10),
        };
        deploy(&d, "CHAIN", "KEY", &dir.path().join("reload.pid"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&d.cert_file).unwrap(), "CHAIN");
        assert_eq!(
            std::fs::metadata(&d.key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(marker.exists());
        let failing = Deploy {
            reload: vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
            ..d.clone()
        };
        let err = deploy(&failing, "CHAIN2", "KEY2", &dir.path().join("reload.pid"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exit status: 3") && err.contains("nope"),
            "{err}"
        );
        let slow = Deploy {
            reload: vec!["sleep".into(), "5".into()],
            reload_timeout: Duration::from_millis(200),
            ..d
        };
        let err = deploy(&slow, "C", "K", &dir.path().join("reload.pid"))
            .await
            .unwrap_err();
        assert!(matches!(err, DeployError::Timeout { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains("timed out"), "{err}");
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The (uid, gid) this process runs as, from /proc.
    fn me() -> (u32, u32) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| -> u32 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("Uid:"), field("Gid:"))
    }

    #[tokio::test]
    async fn deployed_files_get_the_configured_owner() {
        // As root, hand the files to nobody; otherwise to ourselves (all a user may do).
        let owner = match me() {
            (0, _) => (65534, 65534),
            other => other,
        };
        let dir = tempfile::tempdir().unwrap();
        let d = Deploy {
            cert_file: dir.path().join("mx.crt"),
            key_file: dir.path().join("mx.key"),
            owner: Some(owner),
            cert_mode: 0o644,
            key_mode: 0o640,
            reload: vec![],
            reload_timeout: Duration::from_secs(5),
        };
        deploy(&d, "CHAIN", "KEY", &dir.path().join("reload.pid"))
            .await
            .unwrap();
        for f in [&d.cert_file, &d.key_file] {
            let m = std::fs::metadata(f).unwrap();
            assert_eq!((m.uid(), m.gid()), owner, "{}", f.display());
        }
        assert_eq!(
            resolve_owner(&format!("{}:{}", owner.0, owner.1)).unwrap(),
            owner
        );
    }
}
