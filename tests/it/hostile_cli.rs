//! The command line against hostile surroundings (nothing lost and nothing
//! misreported): `--config` wherever it stands and under every name the binary answers to,
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

/// The argument lists that give `--config <ini>` (both spellings) before, inside and after the
/// words of a command: `lead` (a command's name, `[]` for a program that is the command) and
/// `rest` (its other arguments).
fn config_positions(ini: &Path, lead: &[&str], rest: &[&str]) -> Vec<Vec<String>> {
    let ini = ini.display().to_string();
    let spellings = [vec!["--config".to_string(), ini.clone()], vec![format!("--config={ini}")]];
    let mut forms = Vec::new();
    for flag in &spellings {
        let (lead, rest) = (strings(lead), strings(rest));
        forms.push([flag.clone(), lead.clone(), rest.clone()].concat());
        if !lead.is_empty() {
            forms.push([lead.clone(), flag.clone(), rest.clone()].concat());
        }
        if !rest.is_empty() {
            forms.push([lead, rest, flag.clone()].concat());
        }
    }
    forms
}

/// Writes a `medusa.ini` for `base`/`bucket` with a node and a `cassandra.yaml` in `dir`;
/// `extra` goes into `[storage]`.
fn write_ini(dir: &Path, name: &str, base: &Path, bucket: &str, extra: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let yaml = dir.join("cassandra.yaml");
    std::fs::write(&yaml, format!("data_file_directories:\n  - {}\n", data.display())).unwrap();
    let ini = dir.join(name);
    std::fs::write(
        &ini,
        format!(
            "[storage]\nstorage_provider = local\nbase_path = {}\nbucket_name = {bucket}\nfqdn = {FQDN}\n\
             max_retries = 0\n{extra}\n[cassandra]\nconfig_file = {}\n\n[grpc]\nenabled = 1\n\n\
             [kubernetes]\nenabled = 1\nuse_mgmt_api = 1\ncassandra_url = http://127.0.0.1:1/api/v0/ops/node/snapshots\n\n\
             [monitoring]\nmetrics_port = 0\n",
            base.display(),
            yaml.display()
        ),
    )
    .unwrap();
    ini
}

/// `--config X` and `--config=X`, before, inside and after the other arguments, for every
/// command and under every name: each run reads X. X carries a value only it has (a bad
/// `max_backup_age`), so the error proves which file was read; `/etc/medusa/medusa.ini` (absent
/// here, present in a pod) must never be.
#[test]
fn config_is_honoured_in_every_position_and_under_every_name() {
    let dir = TempDir::new("hostile-cli-config").unwrap();
    let dest = dir.path().join("dest").display().to_string();
    let ini = write_ini(dir.path(), "only-here.ini", dir.path(), "bucket", "max_backup_age = proof-of-reading");
    let commands: [(&[&str], &[&str]); 5] = [
        (&["list-backups"], &["--show-all"]),
        (&["status"], &["--backup-name", "b1"]),
        (&["verify"], &["--backup-name", "b1"]),
        (&["download"], &["--backup-name", "b1", "--destination", &dest]),
        (&["purge"], &["--fqdn", FQDN]),
    ];
    /// One run: program, MEDUSA_MODE, lead arguments, the rest.
    type Run<'a> = (&'a str, Option<&'a str>, &'a [&'a str], &'a [&'a str]);
    let mut runs: Vec<Run<'_>> = Vec::new();
    for program in ["medusa-rs", "medusa"] {
        for (lead, rest) in commands {
            runs.push((program, None, lead, rest));
        }
    }
    runs.extend([
        ("medusa-rs", None, &["sidecar"][..], &["--shutdown-grace", "1"][..]),
        ("medusa-rs", None, &["restore-init"], &[]),
        ("medusa-rs", Some("GRPC"), &["entrypoint"], &["--shutdown-grace", "1"]),
        ("medusa-rs", Some("RESTORE"), &["entrypoint"], &[]),
        ("medusa-sidecar", None, &[], &["--shutdown-grace", "1"]),
        ("medusa-restore-init", None, &[], &[]),
        ("medusa-entrypoint", Some("GRPC"), &[], &["--shutdown-grace", "1"]),
        ("medusa-entrypoint", Some("RESTORE"), &[], &[]),
    ]);
    let mut wrong = Vec::new();
    let mut count = 0;
    for (program, mode, lead, rest) in runs {
        for args in config_positions(&ini, lead, rest) {
            let mut c = command(program, &args);
            c.env("MEDUSA_RS_STATE_DIR", dir.path().join("state"));
            if let Some(m) = mode {
                c.env("MEDUSA_MODE", m);
            }
            let out = run(c);
            count += 1;
            let read_it = out.stdout.contains("proof-of-reading") || out.stderr.contains("proof-of-reading");
            if !read_it || out.code == Some(0) || out.code.is_none() {
                wrong.push(format!("{program} {} (MEDUSA_MODE={mode:?}):\n{}", args.join(" "), out.all()));
            }
        }
    }
    assert!(count > 60, "{count} runs");
    assert!(wrong.is_empty(), "{} of {count} runs did not read --config:\n\n{}", wrong.len(), wrong.join("\n\n"));
}

/// The same, with a working configuration: each kind of program works on the bucket its
/// `--config` names. `list-backups` lists that bucket, the sidecar creates its bucket directory
/// (and serves), and restore-init looks for the backup there and names that bucket when it is
/// not.
#[test]
fn each_program_works_on_the_bucket_its_config_names() {
    let dir = TempDir::new("hostile-cli-bucket").unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(base.join("proof-bucket")).unwrap();
    let ini = write_ini(dir.path(), "only-here.ini", &base, "proof-bucket", "");
    for program in ["medusa-rs", "medusa"] {
        for args in config_positions(&ini, &["list-backups"], &["--show-all"]) {
            let out = run(command(program, &args));
            assert!(
                out.code == Some(0) && out.stdout.contains("no backups in bucket proof-bucket"),
                "{program} {}: {}",
                args.join(" "),
                out.all()
            );
        }
    }
    for (program, lead) in [("medusa-rs", &["restore-init"][..]), ("medusa-restore-init", &[])] {
        for args in config_positions(&ini, lead, &[]) {
            let mut c = command(program, &args);
            c.env("MEDUSA_RS_STATE_DIR", dir.path().join("state")).envs([
                ("BACKUP_NAME", "b1"),
                ("RESTORE_KEY", "k1"),
                ("POD_NAME", FQDN),
            ]);
            let out = run(c);
            assert!(
                out.code == Some(1) && format!("{}{}", out.stdout, out.stderr).contains("in bucket proof-bucket"),
                "{program} {}: {}",
                args.join(" "),
                out.all()
            );
        }
    }
    // The sidecar makes the bucket directory of the bucket its --config names.
    for (i, (program, lead)) in [("medusa-rs", &["sidecar"][..]), ("medusa-sidecar", &[])].into_iter().enumerate() {
        for (j, args) in config_positions(&dir.path().join("sidecar.ini"), lead, &["--listen", "127.0.0.1:0"])
            .into_iter()
            .enumerate()
        {
            let bucket = format!("sidecar-{i}-{j}");
            write_ini(dir.path(), "sidecar.ini", &base, &bucket, "");
            let mut c = command(program, &args);
            c.env("MEDUSA_RS_STATE_DIR", dir.path().join("state")).stdout(Stdio::null()).stderr(Stdio::null());
            let mut child = c.spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !base.join(&bucket).is_dir() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let status = child.wait().unwrap();
            assert!(
                base.join(&bucket).is_dir(),
                "{program} {}: no bucket directory {bucket} (exit {status})",
                args.join(" ")
            );
        }
    }
}

/// `bucket_name` values that are not bucket names are refused by every program when it reads
/// the configuration, naming the key, the value and what is accepted; with `local`, `..` used to
/// make `base_path`'s parent the bucket.
#[test]
fn a_bucket_name_that_is_not_one_is_refused() {
    let dir = TempDir::new("hostile-cli-bucket-name").unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    for bucket in ["..", ".", "My Backups", "-x-"] {
        let ini = write_ini(dir.path(), "medusa.ini", &base, bucket, "");
        for (program, args) in [
            ("medusa-rs", strings(&["list-backups"])),
            ("medusa-rs", strings(&["purge", "--fqdn", FQDN])),
            ("medusa-sidecar", strings(&["--listen", "127.0.0.1:0"])),
        ] {
            let args = [strings(&["--config", ini.to_str().unwrap()]), args].concat();
            let out = run(command(program, &args));
            let expected =
                format!("[storage] bucket_name: {bucket:?} is not a bucket name for storage_provider = local");
            assert!(
                matches!(out.code, Some(1 | 2))
                    && out.stderr.contains(&expected)
                    && out.stderr.contains("e.g. medusa-backups"),
                "{program} {} with bucket_name = {bucket}: {}",
                args.join(" "),
                out.all()
            );
        }
    }
    // An object store's bucket too, before any request is sent.
    let ini = dir.path().join("s3.ini");
    std::fs::write(
        &ini,
        "[storage]\nstorage_provider = s3_compatible\nbucket_name = ..\nhost = 127.0.0.1\nport = 1\nsecure = false\n\
         max_retries = 0\nfqdn = n1\n",
    )
    .unwrap();
    let out = run(command("medusa-rs", &strings(&["--config", ini.to_str().unwrap(), "list-backups"])));
    assert!(
        out.code == Some(1) && out.stderr.contains("[storage] bucket_name: \"..\" is not a bucket name"),
        "{}",
        out.all()
    );
}

/// A mistyped `base_path` is an error that names it for every command, the sidecar included,
/// and nothing creates it; a missing bucket directory inside an existing `base_path` is an error
/// for the commands that read (a typo in `bucket_name` would list "no backups").
#[test]
fn a_missing_base_path_or_bucket_directory_is_an_error() {
    let dir = TempDir::new("hostile-cli-base-path").unwrap();
    let typo = dir.path().join("bakcups");
    let ini = write_ini(dir.path(), "medusa.ini", &typo, "bucket", "");
    let dest = dir.path().join("dest").display().to_string();
    let reading = [
        strings(&["list-backups"]),
        strings(&["status", "--backup-name", "b1"]),
        strings(&["verify", "--backup-name", "b1"]),
        strings(&["download", "--backup-name", "b1", "--destination", &dest]),
        strings(&["purge", "--fqdn", FQDN]),
    ];
    let config = strings(&["--config", ini.to_str().unwrap()]);
    let mut runs: Vec<(&str, Vec<String>)> =
        reading.iter().map(|a| ("medusa-rs", [config.clone(), a.clone()].concat())).collect();
    runs.push(("medusa-sidecar", [config.clone(), strings(&["--listen", "127.0.0.1:0"])].concat()));
    let expected = format!("[storage] base_path = {}", typo.display());
    for (program, args) in &runs {
        let out = run(command(program, args));
        assert!(
            matches!(out.code, Some(1 | 2)) && out.stderr.contains(&expected) && out.stderr.contains("create it"),
            "{program} {}: {}",
            args.join(" "),
            out.all()
        );
        assert!(!typo.exists(), "{program} {} created {}", args.join(" "), typo.display());
    }
    // base_path is there, the bucket directory is not: the commands that read refuse it.
    std::fs::create_dir_all(&typo).unwrap();
    for args in &reading {
        let args = [config.clone(), args.clone()].concat();
        let out = run(command("medusa-rs", &args));
        assert!(
            out.code == Some(1) && out.stderr.contains("[storage] bucket_name = bucket: no bucket directory"),
            "medusa-rs {}: {}",
            args.join(" "),
            out.all()
        );
        assert!(!typo.join("bucket").exists(), "medusa-rs {} created the bucket directory", args.join(" "));
    }
}
