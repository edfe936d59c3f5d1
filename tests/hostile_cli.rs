//! The command line against hostile surroundings (issue #21, "nothing lost and nothing
//! misreported"): `--config` wherever it stands and under every name the binary answers to,
//! standard output that closes or fills up under a command, and configuration that points
//! somewhere unintended. Every test runs the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::services::{LocalStorage, TempDir, medusa_py_fixture};
use medusa_tests::binary;

const FQDN: &str = "demo-dc1-default-sts-0";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A command of the binary run as `program`, with none of the environment that could choose a
/// configuration or a restore for it.
fn command(program: &str, args: &[String]) -> Command {
    let mut c = Command::new(binary(program));
    c.args(args)
        .env_remove("MEDUSA_RS_CONFIG")
        .env_remove("MEDUSA_MODE")
        .env_remove("RUST_LOG")
        .env_remove("POD_NAME")
        .env_remove("BACKUP_NAME")
        .env_remove("RESTORE_KEY")
        .env_remove("RESTORE_MAPPING")
        .env_remove("DEBUG_SLEEP")
        .stdin(Stdio::null());
    c
}

/// Runs `c` to its end (killed after 60 s: a daemon that got the wrong configuration may serve).
fn run(c: Command) -> Out {
    run_to(c, None)
}

/// [`run`], with standard output going to `stdout` instead of being kept.
fn run_to(mut c: Command, stdout: Option<std::fs::File>) -> Out {
    let dir = TempDir::new("hostile-cli-out").unwrap();
    let (o, e) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let kept = stdout.is_none();
    c.stdout(stdout.unwrap_or_else(|| std::fs::File::create(&o).unwrap()));
    c.stderr(std::fs::File::create(&e).unwrap());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code,
        stdout: if kept { std::fs::read_to_string(o).unwrap_or_default() } else { String::new() },
        stderr: std::fs::read_to_string(e).unwrap_or_default(),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A copy of the Python fixture bucket (backups full-1, diff-1, diff-2) and its `medusa.ini`.
fn fixture(dir: &Path) -> (LocalStorage, PathBuf) {
    let bucket = LocalStorage::copy_of(&medusa_py_fixture().join("bucket"), "bucket").unwrap();
    let ini = dir.join("medusa.ini");
    let text = format!(
        "{}fqdn = {FQDN}\n\n[cassandra]\nconfig_file = {}\n",
        bucket.medusa_ini_storage(Some("demo")),
        dir.join("cassandra.yaml").display()
    );
    std::fs::write(&ini, text).unwrap();
    (bucket, ini)
}

/// The commands that print, as an operator types them.
fn printing_commands(dir: &Path) -> Vec<Vec<String>> {
    let mut cmds = vec![
        strings(&["list-backups"]),
        strings(&["-o", "json", "list-backups"]),
        strings(&["status", "--backup-name", "diff-2"]),
        strings(&["status", "--backup-name", "diff-2", "-o", "json"]),
        strings(&["verify", "--backup-name", "full-1"]),
        strings(&["verify", "--backup-name", "full-1", "-o", "json"]),
        strings(&["purge", "--fqdn", FQDN]),
        strings(&["purge", "--fqdn", FQDN, "-o", "json"]),
    ];
    for (i, json) in [false, true].into_iter().enumerate() {
        let dest = dir.join(format!("download-{i}")).display().to_string();
        let mut c = strings(&["download", "--backup-name", "full-1", "--destination", &dest, "--fqdn", FQDN]);
        if json {
            c.extend(strings(&["-o", "json"]));
        }
        cmds.push(c);
    }
    cmds
}

/// `medusa-rs list-backups | head -1`: the reader went away. Each printing command ends with
/// exit 141 (128 + SIGPIPE, as a shell reports a program a closed pipe stopped) and says
/// nothing: no panic, no backtrace.
#[test]
fn a_closed_stdout_ends_quietly_with_141() {
    let dir = TempDir::new("hostile-cli-pipe").unwrap();
    let (_bucket, ini) = fixture(dir.path());
    for args in printing_commands(dir.path()) {
        let args = [strings(&["--config", ini.to_str().unwrap()]), args].concat();
        let mut c = command("medusa-rs", &args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The read end closes before the command has printed anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(141) && stderr.is_empty(),
            "medusa-rs {}: exit {:?}, stderr:\n{stderr}",
            args.join(" "),
            out.status.code()
        );
    }
}

/// `medusa-rs list-backups > /dev/full`: the output is lost, so each printing command says so
/// on standard error and exits 1, without a panic.
#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here: skipped");
        return;
    }
    let dir = TempDir::new("hostile-cli-full").unwrap();
    let (_bucket, ini) = fixture(dir.path());
    for args in printing_commands(dir.path()) {
        let args = [strings(&["--config", ini.to_str().unwrap()]), args].concat();
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = run_to(command("medusa-rs", &args), Some(full));
        assert!(
            out.code == Some(1)
                && out.stderr.contains("cannot write to standard output")
                && !out.stderr.contains("panicked"),
            "medusa-rs {}: {}",
            args.join(" "),
            out.all()
        );
    }
}
