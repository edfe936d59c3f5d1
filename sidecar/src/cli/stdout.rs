//! Standard output of the commands, which may go away under them: a reader that stops early
//! (`medusa-rs list-backups | head -1`) or a full disk (`> /dev/full`). `std::println!` panics
//! then (exit 101 and a backtrace); here the first error is kept, later output is dropped, and
//! [`finish`] turns it into the documented exit code once the command is done.
//!
//! Every `print!` and `println!` of `cli` and its submodules comes here: `cli/mod.rs` defines
//! macros of those names ahead of its submodules, which shadow std's, so a print added later
//! cannot bring the panic back.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

/// Exit code when standard output was closed before everything was written: 128 + SIGPIPE,
/// what a shell reports for a program a closed pipe stopped (`seq 1000000 | head -1`).
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// The first error writing standard output.
static FAILED: OnceLock<io::Error> = OnceLock::new();

/// Writes to standard output unless an earlier write failed; remembers the first failure.
pub fn write_fmt(args: std::fmt::Arguments<'_>) {
    if FAILED.get().is_some() {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        let _ = FAILED.set(e);
    }
}

/// Flushes standard output and decides the exit code: `code` when everything was written or
/// when the command already reports a failure of its own (its code says more); otherwise
/// [`EXIT_BROKEN_PIPE`] without a word for a closed pipe (the reader had what it wanted), and
/// 1 with a message on standard error for any other write error (the output is lost).
pub fn finish(code: ExitCode) -> ExitCode {
    if FAILED.get().is_none()
        && let Err(e) = io::stdout().lock().flush()
    {
        let _ = FAILED.set(e);
    }
    let Some(e) = FAILED.get() else { return code };
    let broken_pipe = e.kind() == io::ErrorKind::BrokenPipe;
    if !broken_pipe {
        // Standard error may be gone as well: nothing more can be said then.
        let _ = writeln!(io::stderr(), "medusa-rs: error: cannot write to standard output: {e}");
    }
    match code {
        c if c != ExitCode::SUCCESS => c,
        _ if broken_pipe => ExitCode::from(EXIT_BROKEN_PIPE),
        _ => ExitCode::from(1),
    }
}
