//! Servers the tests start (PostgreSQL, s3s-fs) as children that live as
//! long as the test process, and die with it however it ends.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// Start `cmd` from a thread that lives as long as the process: the child
/// gets SIGQUIT when the process ends (the parent-death signal follows the
/// thread that started the child, so that thread must outlive the tests).
pub(crate) fn spawn_for_the_process(cmd: Command, name: &str) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let what = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut cmd = cmd;
            attach_to_this_thread(&mut cmd);
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start {what}: {e}")));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// The child gets SIGQUIT when the thread that starts it ends.
#[cfg(target_os = "linux")]
pub(crate) fn attach_to_this_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only an async-signal-safe system call (prctl) runs between
    // fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::QUIT))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn attach_to_this_thread(_: &mut Command) {}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Remove the temporary directories (named `PREFIX<pid>`) of earlier runs
/// whose process is gone.
pub(crate) fn remove_stale_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
